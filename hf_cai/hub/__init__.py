"""Sharing CAI work on the Hugging Face Hub.

* :func:`publish` (``model_publish.py``) and :func:`publish_dataset` (``dataset_publish.py``): models (adapter or
  merged 16-bit, files from ``model_files.py``) and datasets, with ``constitution.yaml`` and generated cards, each in
  one commit (``publication.py``) that is skipped when nothing changed and that deletes the files of the format it
  replaces (``commit.py``), after every file was checked for access tokens (``secrets.py``);
  :func:`publish_to_folder` (``folder.py``) and :func:`publish_dataset_to_folder` write the same files into a local
  folder; a dataset's ``provenance.json`` (``dataset_provenance.py``) names the models that wrote and labelled it;
* :func:`~hf_cai.hub.space.create_space` (``space.py``): the side-by-side chat Space, shipping the hf_cai wheel it
  installs (``wheel.py``);
* :func:`build_model_card` (``model_card.py``) and :func:`build_dataset_card` (``dataset_card.py``): the cards alone;
* :func:`list_cai_models` and :func:`compare_constitutions` (``discovery.py``): finding published CAI models and
  comparing their constitutions.

Repository ids are checked by one rule (``repo_id.py``). Names load on first use, so importing this package does not
import ``huggingface_hub`` or ``datasets``.
"""

from __future__ import annotations

from hf_cai._lazy import lazy_exports

_EXPORTS = {
    "publish": "hf_cai.hub.model_publish",
    "publish_dataset": "hf_cai.hub.dataset_publish",
    "publish_to_folder": "hf_cai.hub.folder",
    "publish_dataset_to_folder": "hf_cai.hub.dataset_publish",
    "PublishResult": "hf_cai.hub.publication",
    "PublishError": "hf_cai.hub.errors",
    "ModelCardError": "hf_cai.hub.errors",
    "build_model_card": "hf_cai.hub.model_card",
    "build_dataset_card": "hf_cai.hub.dataset_card",
    "locate_training_output": "hf_cai.hub.source",
    "list_cai_models": "hf_cai.hub.discovery",
    "compare_constitutions": "hf_cai.hub.discovery",
    "CAIModelInfo": "hf_cai.hub.discovery",
    "ConstitutionDiff": "hf_cai.hub.discovery",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
