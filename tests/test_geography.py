"""Geography: pinned boundaries, gazetteer resolution into ITL1 and LAD regions, honest unmapped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pointcount.geography import (
    BUILTIN_BOUNDARIES,
    NATIONAL_CODE,
    UNMAPPED,
    BoundaryError,
    Location,
    boundary_path,
    gazetteer,
    load_boundaries,
    normalise_place,
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


@pytest.mark.parametrize(
    ("text", "itl1"),
    [
        ("Leeds", "TLE"),
        ("Cardiff", "TLL"),
        ("Glasgow", "TLM"),
        ("Belfast", "TLN"),
        ("Brighton", "TLJ"),
        ("Newport, Isle of Wight", "TLJ"),
        ("  leeds ", "TLE"),
    ],
)
def test_towns_resolve_to_their_itl1_region(text: str, itl1: str) -> None:
    loc = gazetteer().resolve(text)
    assert loc is not None and loc.itl1 == itl1
    assert loc.lad.startswith(("E0", "W0", "S1", "N0"))


@pytest.mark.parametrize("text", ["Atlantis", "", "Newport"])
def test_unknown_or_ambiguous_text_is_unmapped_not_guessed(text: str) -> None:
    assert gazetteer().resolve(text) is None


def test_every_gazetteer_place_has_a_region() -> None:
    g = gazetteer()
    assert len(g.places) == 3636
    assert {p.itl1 for p in g.places} == ITL1_CODES
    # Every place resolves to itself when written the way the gazetteer says it must be written.
    unique = [p for p in g.places if g.resolve(g.display_name(p)) == Location(p.itl1, p.lad)]
    assert len(unique) > 3500


def test_normalise_place_ignores_case_accents_and_punctuation() -> None:
    assert normalise_place("Ystradgynlais") == normalise_place("YSTRADGYNLAIS")
    assert normalise_place("St. Ives") == normalise_place("st ives")
    assert normalise_place("Llanfair-ym-Muallt") == "llanfair ym muallt"


def test_region_names_include_national_and_unmapped() -> None:
    assert region_names("national") == {NATIONAL_CODE: "United Kingdom"}
    itl1 = region_names("itl1")
    assert itl1["TLI"] == "London" and itl1[UNMAPPED]
    assert len(region_names("lad")) == 375


def test_shipped_gazetteer_table_equals_a_fresh_spatial_join() -> None:
    from pointcount.geography import BUILTIN_PLACES, BUILTIN_SPEC, join_places, read_places

    assert read_places(BUILTIN_PLACES) == join_places(*BUILTIN_SPEC)


def test_custom_boundaries_are_joined_not_read_from_the_shipped_table(tmp_path: Path) -> None:
    from pointcount.geography import Gazetteer

    custom = tmp_path / "regions.geojson"
    custom.write_bytes(boundary_path("builtin:itl1").read_bytes())
    g = Gazetteer(str(custom), None, 10.0)
    loc = g.resolve("Leeds")
    assert loc == Location("TLE", UNMAPPED)
