"""Key store: owner-only keys per linkage period, destruction (overwrite, unlink, tombstone), rotation, CLI; and
the privacy claim: once a period's key is destroyed, the stored sketches cannot be matched to the sandbox's
canary phone numbers, even with the project's own code (estimation.privacy.linkable)."""

from __future__ import annotations

import os
import stat
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pointcount.config import REPO_CONFIG_DIR
from pointcount.keys import KEY_BYTES, KeyStore, Pseudonymiser, period_bounds, period_id


def test_periods() -> None:
    assert period_id(date(2026, 11, 29), "month") == "2026-11"
    assert period_id(date(2026, 11, 29), "week") == "2026-W48"
    assert period_bounds("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
    assert period_bounds("2026-W48") == (date(2026, 11, 23), date(2026, 11, 29))


def test_key_is_owner_only_stable_and_per_period(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", destroy_after_days=7)
    k1 = store.key("2026-11", today=date(2026, 11, 2))
    assert len(k1) == KEY_BYTES
    assert store.key("2026-11") == k1
    assert store.key("2026-12", today=date(2026, 12, 1)) != k1
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((store.dir / "2026-11.key").stat().st_mode) == 0o600
    assert store.permission_problems() == []
    os.chmod(store.dir / "2026-11.key", 0o644)
    assert any("accessible to others" in p for p in store.permission_problems())
    assert not list(store.dir.glob(".*.tmp"))  # the temporary file of the atomic creation is gone


def test_destroy_overwrites_in_place_then_unlinks(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", destroy_after_days=7)
    key = store.key("2026-11", today=date(2026, 11, 2))
    witness = tmp_path / "witness"  # a second name for the same inode shows what happened to its bytes
    os.link(store.dir / "2026-11.key", witness)
    assert store.destroy("2026-11", today=date(2026, 12, 8)) is True
    assert not (store.dir / "2026-11.key").exists()
    assert witness.read_bytes() != key and len(witness.read_bytes()) == KEY_BYTES  # overwritten before unlink
    assert all(key not in p.read_bytes() for p in store.dir.iterdir())
    assert [i.period for i in store.history() if i.destroyed] == ["2026-11"]
    with pytest.raises(KeyError, match="never recreated"):
        store.key("2026-11", today=date(2026, 11, 3))
    assert store.destroy("2026-11") is False


def test_destroy_expired_and_rotate_follow_the_dates(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys", destroy_after_days=7)
    store.key("2026-11", today=date(2026, 11, 2))
    assert store.destroy_on("2026-11") == date(2026, 12, 8)
    assert store.destroy_expired(date(2026, 12, 7)) == []
    rotation = store.rotate("month", date(2026, 12, 8))
    assert rotation.destroyed == ["2026-11"] and rotation.current == "2026-12"
    assert [i.period for i in store.list()] == ["2026-12"]
    with pytest.raises(KeyError, match="past its destruction date"):
        KeyStore(tmp_path / "other", 7).key("2026-10", today=date(2026, 12, 8))


def _config(tmp_path: Path) -> Path:
    cfg = {
        "ethics": {"contact": "test@example.org"},
        "keys": {"dir": str(tmp_path / "keys"), "linkage_period": "month", "destroy_after_days": 7},
        "platforms": [str(REPO_CONFIG_DIR / "platforms" / "sandbox-api.yaml")],
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_keys_cli_shows_and_rotates(tmp_path: Path) -> None:
    from estimation.cli import keys_app

    config = _config(tmp_path)
    KeyStore(tmp_path / "keys", 7).key("2026-11", today=date(2026, 11, 2))
    runner = CliRunner()
    out = runner.invoke(keys_app, ["--config", str(config), "--today", "2026-12-09"])
    assert out.exit_code == 0, out.output
    assert "2026-11" in out.output and "expired" in out.output
    out = runner.invoke(keys_app, ["rotate", "--config", str(config), "--today", "2026-12-09"])
    assert out.exit_code == 0, out.output
    assert "destroyed the key of 2026-11" in out.output and "2026-12" in out.output
    assert not (tmp_path / "keys" / "2026-11.key").exists()
    out = runner.invoke(keys_app, ["show", "--config", str(config), "--today", "2026-12-09"])
    assert "destroyed" in out.output and "current" in out.output
    out = runner.invoke(keys_app, ["--config", str(tmp_path / "missing.yaml")])
    assert out.exit_code == 2


def _load_november(tmp_path: Path, store: KeyStore):  # type: ignore[no-untyped-def]
    """A warehouse holding one sandbox day hashed with November's key, and the sandbox's canary phones."""
    from estimation.validate import BASE_DATE, simulated_result
    from sandbox import truth
    from sandbox.population import CARD_PLATFORMS, cached
    from warehouse import Warehouse

    assert period_id(BASE_DATE, "month") == "2026-11"
    key = store.key("2026-11", today=BASE_DATE)
    pop = cached(5, 300, 1, "independent")
    canaries = truth(5, 0, 300, membership="independent", horizon_days=1)["canaries"]["phones"]
    wh = Warehouse(tmp_path / "wh.duckdb")
    wh.start_run("r1", datetime(2026, 11, 1, 5), "h", None, "test")
    wh.load_results("r1", BASE_DATE, [simulated_result(pop, p, 0, key, "r1") for p in CARD_PLATFORMS])
    wh.finish_run("r1", "complete", [])
    return wh, key, canaries


def test_destroyed_key_unlinks_sketches_from_canaries(tmp_path: Path) -> None:
    """Load a sandbox day hashed with November's key; the canary phones are found in the stored sketches with that
    key, and after rotation the audit of November's sketches -- with November's key, the destroyed key's period,
    not December's, which never touched them -- finds no key and nothing linkable."""
    from estimation.privacy import linkable, sketch_periods

    store = KeyStore(tmp_path / "keys", destroy_after_days=7)
    wh, key, canaries = _load_november(tmp_path, store)
    with wh:
        assert sketch_periods(wh.con, store) == {"2026-11": True}
        before = linkable(wh.con, store, canaries)
        assert before, "with the key on disk the canaries must be found (otherwise this test proves nothing)"
        assert {m.key_period for m in before} == {"2026-11"}
        found_phones = {Pseudonymiser(key).advertiser("phone", p) for p in _e164s([m.phone for m in before])}
        assert len(found_phones) > 100  # most visible card advertisers, not a fluke

        rotation = store.rotate("month", date(2026, 12, 9))
        assert rotation.destroyed == ["2026-11"] and [i.period for i in store.list()] == ["2026-12"]
        assert sketch_periods(wh.con, store) == {"2026-11": False}  # the audited period is the destroyed one
        assert linkable(wh.con, store, canaries) == []
    for path in (tmp_path / "keys").iterdir():  # the key's bytes are nowhere in the key folder
        assert key not in path.read_bytes()
    raw = (tmp_path / "wh.duckdb").read_bytes()
    assert key not in raw  # the key never reached the warehouse


def test_the_destruction_audit_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control for the test above: a faulty destruction (tombstone written, key file left in place)
    must make the same audit find the canaries after rotation."""
    from estimation.privacy import linkable, sketch_periods

    def faulty_destroy(self: KeyStore, pid: str, today: date | None = None) -> bool:
        self._tombstone(pid).write_text(f"{pid} {(today or date.today()).isoformat()}\n")
        return True

    monkeypatch.setattr(KeyStore, "destroy", faulty_destroy)
    store = KeyStore(tmp_path / "keys", destroy_after_days=7)
    wh, _, canaries = _load_november(tmp_path, store)
    with wh:
        assert store.rotate("month", date(2026, 12, 9)).destroyed == ["2026-11"]
        assert sketch_periods(wh.con, store) == {"2026-11": True}
        assert len(linkable(wh.con, store, canaries)) > 100


def _e164s(phones: list[str]) -> set[str]:
    from crawlers.edge import normalise_linkage

    return {e for e in (normalise_linkage("phone", p) for p in phones) if e}
