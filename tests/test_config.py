"""Configuration: every shipped file validates; each malformed case gives one clear line, exit 2, no writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from pointcount.config import (
    DEFAULT_CONFIG,
    DEMO_CONFIG,
    REPO_CONFIG_DIR,
    ConfigError,
    load_config,
    load_platforms,
)

runner = CliRunner()
SHIPPED_PLATFORMS = sorted((REPO_CONFIG_DIR / "platforms").glob("*.yaml"))
GOOD_PLATFORM = yaml.safe_load((REPO_CONFIG_DIR / "platforms" / "sandbox-directory.yaml").read_text())


def test_every_shipped_platform_file_validates() -> None:
    assert len(SHIPPED_PLATFORMS) >= 4
    platforms = load_platforms(SHIPPED_PLATFORMS)
    assert {p.mode for p in platforms} == {"cards", "count"}
    assert {p.format for p in platforms} == {"html", "json"}
    assert len({p.base_url for p in platforms}) == len(platforms), "each platform has its own loopback host"


@pytest.mark.parametrize("path", [DEFAULT_CONFIG, DEMO_CONFIG], ids=lambda p: p.name)
def test_shipped_run_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.run.schedule.cron == "0 5 * * *" and cfg.run.schedule.timezone == "Europe/London"
    assert cfg.run.ethics.min_delay_s == 3.0
    assert cfg.run.disclosure.threshold == 10 and cfg.run.disclosure.rounding_base == 5
    assert [p.name for p in cfg.platforms]
    # The key store must never live inside the warehouse or exports folders.
    assert not cfg.keys_path.is_relative_to(cfg.exports_path)
    assert not cfg.keys_path.is_relative_to(cfg.warehouse_path.parent)


def test_config_hash_changes_with_content(tmp_path: Path) -> None:
    base = load_config(DEMO_CONFIG)
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["platforms"] = [str(REPO_CONFIG_DIR / p) for p in data["platforms"]]
    data["disclosure"] = {"threshold": 20}
    other = tmp_path / "run.yaml"
    other.write_text(yaml.safe_dump(data))
    assert load_config(other).config_hash != base.config_hash


def test_base_url_override_points_a_platform_elsewhere(tmp_path: Path) -> None:
    run = {
        "ethics": {"contact": "team@example.org"},
        "platforms": [{"file": str(SHIPPED_PLATFORMS[0]), "base_url": "http://127.0.0.9:1234"}],
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert load_config(tmp_path / "run.yaml").platforms[0].base_url == "http://127.0.0.9:1234"


@pytest.mark.parametrize("key", ["gazetteer", "snap_km"])
def test_retired_geography_keys_are_refused_in_one_line_naming_the_key(tmp_path: Path, key: str) -> None:
    """A config from before issue 12 fails with why the key went, not a bare "unknown key"."""
    run = {"ethics": {"contact": "team@example.org"}, "platforms": [str(SHIPPED_PLATFORMS[0])],
           "geography": {"regions": "builtin:itl1", key: {"gazetteer": "builtin:geonames", "snap_km": 10.0}[key]}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert err.value.problems == [
        f"{tmp_path / 'run.yaml'}: geography: {key}: no longer used (locations are resolved by pointcount.locations "
        "on its own vendored data); remove the key"
    ]
    del run["geography"][key]  # positive control: the same file without it loads
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    assert load_config(tmp_path / "run.yaml").run.geography.regions == "builtin:itl1"


def platform(**changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD_PLATFORM))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


REAL_HOST = "https://directory.example.com"

# (id, files to write {name: text or dict}, which file the CLI gets / "run" for a run config, expected words)
BAD_CASES: list[tuple[str, dict[str, object], str, tuple[str, ...]]] = [
    ("unknown-key", {"p.yaml": platform(colour="red")}, "p.yaml", ("colour", "unknown key")),
    ("wrong-type", {"p.yaml": platform(politeness__delay_s="fast")}, "p.yaml", ("politeness.delay_s", "number")),
    ("negative-outage-pause", {"p.yaml": platform(politeness__outage_pause_s=-1)}, "p.yaml",
     ("politeness.outage_pause_s", "greater than or equal to 0")),
    ("bad-regex", {"p.yaml": platform(total__regex="of ([\\d,]+")}, "p.yaml", ("total", "regex")),
    (
        "bad-url-variable",
        {"p.yaml": platform(listing_url="/search/{region}/{categroy}?page={page}")},
        "p.yaml",
        ("listing_url", "categroy"),
    ),
    ("unknown-category", {"p.yaml": platform(categories={"f": "women", "x": "aliens"})}, "p.yaml", ("aliens",)),
    ("bad-jmespath", {"p.yaml": platform(total={"jmespath": "meta.[total"})}, "p.yaml", ("total", "jmespath")),
    ("bad-base-url", {"p.yaml": platform(base_url="directory.example.com")}, "p.yaml", ("base_url", "http")),
    ("cards-mode-without-cards", {"p.yaml": {k: v for k, v in GOOD_PLATFORM.items() if k != "cards"}}, "p.yaml",
     ("cards",)),
    ("empty-file", {"p.yaml": ""}, "p.yaml", ("empty",)),
    ("yaml-syntax", {"p.yaml": "name: [unclosed\nmode: cards\n"}, "p.yaml", ("YAML syntax error", "line")),
    ("unreadable-file", {}, "missing.yaml", ("cannot be read",)),
    ("not-a-mapping", {"p.yaml": "- just\n- a list\n"}, "p.yaml", ("mapping",)),
    (
        "delay-below-floor",
        {
            "p.yaml": platform(base_url=REAL_HOST, politeness__delay_s=1.0),
            "run.yaml": {"ethics": {"approval": "ERC-1", "contact": "a@b.org"}, "platforms": ["p.yaml"]},
        },
        "run",
        ("politeness.delay_s", "floor"),
    ),
    (
        "missing-ethics-approval",
        {
            "p.yaml": platform(base_url=REAL_HOST, politeness__delay_s=5.0),
            "run.yaml": {"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"]},
        },
        "run",
        ("ethics.approval",),
    ),
    (
        "duplicate-platform-name",
        {
            "p.yaml": platform(),
            "q.yaml": platform(base_url="http://127.0.0.9:8400"),
            "run.yaml": {"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml", "q.yaml"]},
        },
        "run",
        ("duplicate platform name",),
    ),
    (
        "cron-syntax",
        {"p.yaml": platform(), "run.yaml": {"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"],
                                            "schedule": {"cron": "0 25 * * *"}}},
        "run",
        ("schedule.cron", "cron"),
    ),
    (
        "unknown-timezone",
        {"p.yaml": platform(), "run.yaml": {"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"],
                                            "schedule": {"timezone": "Europe/Atlantis"}}},
        "run",
        ("schedule.timezone",),
    ),
    (
        "robots-off-for-real-host",
        {
            "p.yaml": platform(base_url=REAL_HOST, politeness__delay_s=5.0, politeness__obey_robots=False),
            "run.yaml": {"ethics": {"approval": "ERC-1", "contact": "a@b.org"}, "platforms": ["p.yaml"]},
        },
        "run",
        ("obey_robots",),
    ),
    # Review findings: ways a config could quietly switch a guarantee off.
    ("host-disguised-by-backslash", {"p.yaml": platform(base_url="http://evil.example\\@127.0.0.2:8400")}, "p.yaml",
     ("base_url", "disguise")),
    ("host-disguised-by-userinfo", {"p.yaml": platform(base_url="http://user@127.0.0.2:8400")}, "p.yaml",
     ("base_url", "disguise")),
    ("alias-to-another-site", {"p.yaml": platform(base_url=REAL_HOST, politeness__delay_s=5.0,
                                                  aliases=["https://elsewhere.example"])}, "p.yaml",
     ("alias", "another origin of the same site")),
    ("alias-from-loopback-to-internet", {"p.yaml": platform(aliases=["https://www.example.org"])}, "p.yaml",
     ("alias", "loopback")),
    ("consent-login-url", {"p.yaml": platform(consent={"url": "/login?next=/search"})}, "p.yaml",
     ("consent.url", "login")),
    *((f"consent-url-{i}", {"p.yaml": platform(consent={"url": url})}, "p.yaml", ("consent.url", why))
      for i, (url, why) in enumerate([
          ("/log%69n", "login"), ("/sign_in", "login"), ("/Sign.In", "login"), ("/session/new", "login"),
          ("/users/me", "login"), ("/my-profile", "login"), ("/contact", "login"), ("/members/area", "login"),
          ("/signup", "login"), ("/%2561ccount", "login"),
          ("/age-check?email=jane.doe%40example.org&phone=07700900123", "login"),  # the @, once decoded
          ("/age-check?phone=07700900123", "flags"), ("/age?dob=1990-01-01&name=Jane", "flags"),
          ("/age?confirm=1990-01-01", "flags"), ("/age?a=1&b=1&c=1&d=1", "at most"),
          ("/age?ok=jane%20doe", "flags"), ("/enter?uid=x1", "flags")])),
    ("consent-url-never-fetch", {"p.yaml": platform(consent={"url": "/gate/age"}, never_fetch=["/Gate"])}, "p.yaml",
     ("never_fetch",)),
    ("consent-cookie-with-personal-value", {"p.yaml": platform(consent={"cookies": {"email": "a@b.org"}})},
     "p.yaml", ("consent.cookies", "token")),
    ("consent-both-ways", {"p.yaml": platform(consent={"cookies": {"age": "1"}, "url": "/age"})}, "p.yaml",
     ("consent", "exactly one")),
    ("jmespath-with-css-and-xpath", {"p.yaml": platform(total={"css": "script::text", "xpath": "//script",
                                                                "jmespath": "total"})}, "p.yaml", ("total",)),
    ("delay-floor-below-1s", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org", "min_delay_s": 0.5}, "platforms": ["p.yaml"]}}, "run",
     ("ethics.min_delay_s",)),
    ("browser-user-agent", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org", "user_agent": "Mozilla/5.0"}, "platforms": ["p.yaml"]}}, "run",
     ("ethics.user_agent", "{contact}")),
    ("contact-not-reachable", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "@"}, "platforms": ["p.yaml"]}}, "run", ("ethics.contact", "email")),
    ("disclosure-threshold-below-10", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"], "disclosure": {"threshold": 5}}}, "run",
     ("disclosure.threshold", "10")),
    ("keys-inside-exports", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"], "exports_dir": "out",
        "keys": {"dir": "out/keys"}}}, "run", ("keys.dir", "exports_dir")),
    ("unmapped-share-above-1", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"], "alarms": {"max_unmapped_share": 5}}}, "run",
     ("alarms.max_unmapped_share",)),
    ("alarms-unknown-key", {"p.yaml": platform(), "run.yaml": {
        "ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"], "alarms": {"unmapped_share": 0.1}}}, "run",
     ("alarms.unmapped_share",)),
    (
        "blank-ethics-approval",
        {
            "p.yaml": platform(base_url=REAL_HOST, politeness__delay_s=5.0),
            "run.yaml": {"ethics": {"approval": "   ", "contact": "a@b.org"}, "platforms": ["p.yaml"]},
        },
        "run",
        ("ethics.approval",),
    ),
]


@pytest.mark.parametrize(("files", "target", "words"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_config_gives_one_clear_line_and_exit_2(
    tmp_path: Path, files: dict[str, object], target: str, words: tuple[str, ...]
) -> None:
    for name, content in files.items():
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        (tmp_path / name).write_text(text)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = ["platforms", "validate", "--config", str(tmp_path / "run.yaml")] if target == "run" else [
        "platforms", "validate", str(tmp_path / target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(str(tmp_path)), line
    for word in words:
        assert word in line, (word, line)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a failed validation must write nothing"


def test_platforms_may_share_a_host_and_declare_aliases(tmp_path: Path) -> None:
    """Two sections of one site are two platforms (their crawls take turns: crawlers/hostlock.py); a real site's
    ``www.``/https origins are aliases."""
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(platform(categories={"female": "women"})))
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(platform(name="other", base_url="http://127.0.0.2:9999",
                                                             categories={"male": "men"})))
    run = {"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml", "q.yaml"]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    cfg = load_config(tmp_path / "run.yaml")
    assert [p.hosts for p in cfg.platforms] == [("127.0.0.2",), ("127.0.0.2",)]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(platform(
        base_url="http://directory.example.com", politeness__delay_s=5.0,
        aliases=["https://www.directory.example.com", "https://directory.example.com"])))
    real = load_platforms([tmp_path / "r.yaml"])
    assert real[0].hosts == ("directory.example.com", "www.directory.example.com")


def test_validate_warns_about_attribute_names_the_parser_lower_cases(tmp_path: Path) -> None:
    bad = platform(cards__listing_key={"css": "::attr(data-adId)"}, total={"xpath": "//p/@dataTotal"})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["platforms", "validate", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "cards.listing_key.css" in result.stderr and "'data-adid'" in result.stderr
    assert "total.xpath" in result.stderr and "'datatotal'" in result.stderr
    # The shipped files (lower-case attribute names) validate without a warning.
    clean = runner.invoke(app, ["platforms", "validate", *map(str, SHIPPED_PLATFORMS)])
    assert "warning" not in clean.stderr


def test_problems_name_the_file_at_fault(tmp_path: Path) -> None:
    """A run config blames the platform file for platform problems and itself for its own."""
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(platform(base_url=REAL_HOST, politeness__delay_s=0.5)))
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"], "schedule": {"cron": "x"}})
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(f"{tmp_path / 'run.yaml'}: schedule.cron")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"ethics": {"contact": "a@b.org"}, "platforms": ["p.yaml"]}))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert sorted(p.split(": ")[1] for p in err.value.problems) == ["ethics.approval", "politeness.delay_s"]
    assert all(p.startswith(str(tmp_path / "p.yaml")) for p in err.value.problems)


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(platform(colour="red", politeness__delay_s="x")))
    (tmp_path / "b.yaml").write_text("")
    result = runner.invoke(app, ["platforms", "validate", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    assert result.exit_code == 2
    assert len([ln for ln in result.stderr.splitlines() if ln.strip()]) == 3


def test_valid_files_pass_with_exit_0() -> None:
    result = runner.invoke(app, ["platforms", "validate", *map(str, SHIPPED_PLATFORMS)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok ") == len(SHIPPED_PLATFORMS)


def test_plain_consent_urls_still_pass() -> None:
    """Positive control for the consent-url refusals above: age gates and consent flags as real sites spell them."""
    from pointcount.config import Consent

    for url in ("/age-check?accept=1", "/enter?over18=yes", "/consent/accept?v=2&lang=en-GB", "/age-verification",
                "/disclaimer?agree=true", "/gate"):
        assert Consent(url=url).url == url
