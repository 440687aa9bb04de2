"""Jinja templates of the model and dataset cards (``model_card.md.j2``, ``dataset_card.md.j2``), shipped as package
data and rendered by :mod:`hf_cai.hub.templates`."""
