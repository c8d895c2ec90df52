"""Page layouts of a printed ECG: which lead goes in which row, and how tall the rows are.

A row is a tuple of leads that share the recording's time axis: a row of four leads shows the first
quarter of the record in its first lead, the second quarter in the next, and so on (what a 12-lead
printer does); a row of one lead is a rhythm strip over the whole record. ``3x4`` is the usual
printout (3 rows of 4 leads + a lead II rhythm strip), ``6x2`` and ``12x1`` the other ECGInstruct
layouts, ``1x1`` a lone lead II strip, legible at the tiny resolutions of test and demo models.
"""

from __future__ import annotations

from dataclasses import dataclass

from evl_kd_trainer.ecg.leads import STANDARD_LEADS, canonical_lead


@dataclass(frozen=True)
class Layout:
    """Rows of leads (each row splits the shown duration evenly among its leads) and the row height in mm."""

    name: str
    rows: tuple[tuple[str, ...], ...]
    row_height_mm: float

    def __post_init__(self) -> None:
        if not self.rows or any(not row for row in self.rows):
            raise ValueError(f"Layout {self.name!r} needs at least one row and one lead per row.")
        if self.row_height_mm <= 0:
            raise ValueError(f"Layout {self.name!r}: row_height_mm must be positive, got {self.row_height_mm}.")
        for row in self.rows:
            for lead in row:
                canonical_lead(lead)

    @property
    def leads(self) -> tuple[str, ...]:
        """Every lead the layout draws (each once, in order of first appearance)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for lead in row:
                seen.setdefault(canonical_lead(lead), None)
        return tuple(seen)


LAYOUTS: dict[str, Layout] = {
    "3x4": Layout(
        "3x4",
        (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"), ("II",)),
        row_height_mm=40.0,
    ),
    "6x2": Layout(
        "6x2",
        (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6")),
        row_height_mm=30.0,
    ),
    "12x1": Layout("12x1", tuple((lead,) for lead in STANDARD_LEADS), row_height_mm=25.0),
    "1x1": Layout("1x1", (("II",),), row_height_mm=30.0),
}


def get_layout(layout: str | Layout) -> Layout:
    """A :class:`Layout` by name (``3x4``, ``6x2``, ``12x1``, ``1x1``; ``"rhythm"`` = ``1x1``) or as given."""
    if isinstance(layout, Layout):
        return layout
    name = {"rhythm": "1x1", "4x3": "3x4"}.get(str(layout), str(layout))
    if name not in LAYOUTS:
        raise ValueError(f"Unknown ECG layout {layout!r}; known: {sorted(LAYOUTS)} (or pass a Layout).")
    return LAYOUTS[name]
