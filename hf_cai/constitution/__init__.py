"""Constitutions: the principles a model is aligned to, as a first-class, hashable artifact.

A :class:`Constitution` holds :class:`Principle` objects. Each principle carries the texts the
Constitutional AI method needs:

* ``critique`` asks the model to find problems in its last reply (SL-CAI),
* ``revision`` asks it to rewrite that reply (SL-CAI),
* ``preference`` is the multiple-choice question asked of the feedback model (RL-CAI).

A principle used only for one stage may leave the other stage's texts out (the paper's 16 SL and 16 RL
principles are distinct lists). Constitutions load from and save to YAML or JSON; files in the formats of
the open references (llm-swarm JSON, the paper's instruction files) are imported. The canonical
:attr:`Constitution.sha256` is the same whatever the key order or file format.

Modules: :mod:`.model` (the data model), :mod:`.validation` (the file schema and its error messages), :mod:`.files`
(YAML/JSON and the built-in constitutions), :mod:`.importers` (llm-swarm and paper files), :mod:`.hub` (published
constitutions), :mod:`.rendering` (feedback question texts), :mod:`.transcript` (Anthropic-style transcripts).
"""

from __future__ import annotations

from hf_cai.constitution.errors import ConstitutionError
from hf_cai.constitution.model import Constitution, PreferenceExample, Principle, PrincipleUse
from hf_cai.constitution.rendering import PREFERENCE_OPTIONS, render_preference_question, render_transcript

__all__ = [
    "PREFERENCE_OPTIONS",
    "Constitution",
    "ConstitutionError",
    "PreferenceExample",
    "Principle",
    "PrincipleUse",
    "render_preference_question",
    "render_transcript",
]
