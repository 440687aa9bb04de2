"""The license identifiers the Hub accepts in card metadata, and checking a user's choice against them."""

from __future__ import annotations

import difflib

from hf_cai.hub.errors import ModelCardError

HUB_LICENSES: frozenset[str] = frozenset(
    """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
    afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
    cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
    cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0
    lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
    openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
    fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown
    other""".split()
)
"""From https://huggingface.co/docs/hub/repositories-licenses."""


def validate_license(license: str | None, *, license_name: str | None = None, license_link: str | None = None) -> str:
    """Return ``license`` when the Hub accepts it; raise :class:`ModelCardError` with the closest identifiers if not.

    ``"other"`` needs ``license_name`` (a short slug) and ``license_link`` (the license text, e.g. ``LICENSE``).
    """
    if not license:
        raise ModelCardError(
            "a license is required: pass license= (a Hub license id such as 'apache-2.0', 'mit', 'llama3.1'). "
            "The fine-tune usually inherits the base model's license."
        )
    normalized = license.strip().lower()
    if normalized not in HUB_LICENSES:
        close = difflib.get_close_matches(normalized, sorted(HUB_LICENSES), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ModelCardError(
            f"license '{license}' is not a Hub license identifier.{hint} "
            "See https://huggingface.co/docs/hub/repositories-licenses, or use 'other' with license_name and license_link."
        )
    if normalized == "other" and not (license_name and license_link):
        raise ModelCardError("license 'other' needs license_name (a short slug) and license_link (URL or LICENSE file)")
    return normalized
