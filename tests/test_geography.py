"""Geography: pinned boundaries, user boundary files and region names (location text: tests/test_locations.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pointcount.geography import (
    BUILTIN_BOUNDARIES,
    NATIONAL_CODE,
    UNMAPPED,
    BoundaryError,
    boundary_path,
    load_boundaries,
    region_names,
)

ITL1_CODES = {f"TL{c}" for c in "CDEFGHIJKLMN"}


def test_builtin_boundaries_are_pinned_and_complete() -> None:
    itl1 = load_boundaries("builtin:itl1")
    assert set(itl1["code"]) == ITL1_CODES
    assert len(load_boundaries("builtin:lad")) == 374
    assert itl1.crs.to_epsg() == 4326


def test_a_modified_builtin_boundary_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pointcount import geography

    filename, _ = BUILTIN_BOUNDARIES["itl1"]
    (tmp_path / filename).write_text('{"type": "FeatureCollection", "features": []}')
    monkeypatch.setattr(geography, "BOUNDARY_DIR", tmp_path)
    with pytest.raises(BoundaryError, match="sha256"):
        boundary_path("builtin:itl1")


def test_user_boundary_file_can_replace_the_builtin(tmp_path: Path) -> None:
    custom = tmp_path / "regions.geojson"
    custom.write_bytes(boundary_path("builtin:itl1").read_bytes())
    frame = load_boundaries(str(custom), "nuts1_code", "name_official")
    assert set(frame["code"]) == {f"UK{c}" for c in "CDEFGHIJKLMN"}


def test_region_names_include_national_and_unmapped() -> None:
    assert region_names("national") == {NATIONAL_CODE: "United Kingdom"}
    itl1 = region_names("itl1")
    assert itl1["TLI"] == "London" and itl1[UNMAPPED]
    assert len(region_names("lad")) == 375
