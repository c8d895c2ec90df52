"""The twelve standard leads: canonical names, the spellings archives use, and reordering to one order.

PTB-XL writes ``AVR``, CODE-15% documents ``DI``/``DII``/``DIII``, and printed ECGs say ``aVR``: every
module of this package maps names through :func:`canonical_lead` so that a layout asking for ``"aVR"``
finds the lead whatever the archive called it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_ALIASES: dict[str, str] = {name.upper(): name for name in STANDARD_LEADS}
_ALIASES.update({"DI": "I", "DII": "II", "DIII": "III", "D1": "I", "D2": "II", "D3": "III"})


def canonical_lead(name: str) -> str:
    """The printed name of a lead (``"AVR"`` -> ``"aVR"``, ``"DII"`` -> ``"II"``); unknown names raise."""
    key = str(name).strip().upper()
    if key not in _ALIASES:
        raise ValueError(
            f"Unknown ECG lead name {name!r}; expected one of {list(STANDARD_LEADS)} (any case, or DI/DII/DIII)."
        )
    return _ALIASES[key]


def lead_index(lead_names: Sequence[str]) -> dict[str, int]:
    """Map canonical lead name -> row of the signal; duplicate leads raise (a mislabelled record)."""
    index: dict[str, int] = {}
    for row, name in enumerate(lead_names):
        lead = canonical_lead(name)
        if lead in index:
            raise ValueError(f"Lead {lead!r} appears twice in the lead names {list(lead_names)}.")
        index[lead] = row
    return index


def to_standard_order(signal: np.ndarray, lead_names: Sequence[str]) -> np.ndarray:
    """Rows of ``signal`` (leads x samples) reordered to :data:`STANDARD_LEADS`; every lead must be present."""
    index = lead_index(lead_names)
    missing = [lead for lead in STANDARD_LEADS if lead not in index]
    if missing:
        raise ValueError(f"Missing lead(s) {missing} among {list(lead_names)}.")
    return np.asarray(signal)[[index[lead] for lead in STANDARD_LEADS]]
