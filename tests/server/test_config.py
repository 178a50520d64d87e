"""ServerConfig: flags win over ENCRYIP_* environment, every problem listed at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from encryip_runtime.server.config import ConfigError, ServerConfig


def test_defaults(tmp_path: Path) -> None:
    cfg = ServerConfig.from_args([str(tmp_path)], environ={})
    assert cfg.release_dir == tmp_path
    assert (cfg.host, cfg.port, cfg.health_port, cfg.metrics_port) == ("0.0.0.0", 8001, 8081, 9090)
    assert (cfg.max_batch, cfg.max_queue_delay_ms, cfg.max_queue) == (32, 5.0, 1024)
    assert cfg.max_message_bytes == 16 * 1024 * 1024
    assert (cfg.drain_seconds, cfg.reload_poll_seconds, cfg.log_level) == (20.0, 0.0, "INFO")
    assert cfg.model_name is None and not cfg.tls and cfg.read_token() is None


def test_env_fills_and_flags_win(tmp_path: Path) -> None:
    env = {
        "ENCRYIP_RELEASE_DIR": str(tmp_path),
        "ENCRYIP_PORT": "7000",
        "ENCRYIP_MAX_BATCH": "8",
        "ENCRYIP_LOG_LEVEL": "debug",
        "ENCRYIP_MODEL_NAME": "fromenv",
    }
    cfg = ServerConfig.from_args(["--port", "7001", "--model-name", "flag"], environ=env)
    assert cfg.port == 7001 and cfg.max_batch == 8 and cfg.log_level == "DEBUG"
    assert cfg.model_name == "flag" and cfg.release_dir == tmp_path
    assert ServerConfig.from_env(env).port == 7000
    assert ServerConfig.from_env(env, port=0).port == 0


def test_all_problems_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_args(
            [str(tmp_path / "missing"), "--port", "x", "--max-batch", "nope"],
            environ={"ENCRYIP_DRAIN_SECONDS": "nan"},
        )
    text = "\n".join(info.value.problems)
    assert "--port: not an integer (got 'x')" in text
    assert "--max-batch" in text and "ENCRYIP_DRAIN_SECONDS" in text
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_args(
            [str(tmp_path / "missing"), "--port", "70000", "--tls-cert", str(tmp_path / "c.pem")],
            environ={},
        )
    problems = info.value.problems
    assert any("not a directory" in p for p in problems)
    assert any("0..65535" in p for p in problems)
    assert any("give both or neither" in p for p in problems)
    assert any("no such file" in p for p in problems)


def test_missing_release_dir() -> None:
    with pytest.raises(ConfigError, match="RELEASE_DIR: missing"):
        ServerConfig.from_args([], environ={})


def test_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cret\n")
    cfg = ServerConfig.from_args(
        [str(tmp_path), "--token-file", str(token), "--allow-insecure-token"], environ={}
    )
    assert cfg.read_token() == b"s3cret"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        cfg.read_token()


def test_docs_table_is_generated_from_the_fields() -> None:
    """docs/deploy.md's flags table is exactly what the field metadata renders."""
    from encryip_runtime.server.config import render_docs

    docs = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
    text = docs.read_text(encoding="utf-8")
    assert render_docs(text) == text, (
        "docs/deploy.md is stale: run python -m encryip_runtime.server.config --write-docs"
    )
    for name in ("--max-batch", "ENCRYIP_DRAIN_SECONDS", "--allow-insecure-token"):
        assert f"`{name}`" in text


def test_every_field_is_a_flag_and_an_env_var(tmp_path: Path) -> None:
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser()
    ServerConfig.add_arguments(parser)
    help_text = parser.format_help()
    for f in dataclasses.fields(ServerConfig):
        assert {"parse", "help", "shown", "switch"} <= set(f.metadata), f.name
        if f.name != "release_dir":
            assert "--" + f.name.replace("_", "-") in help_text
        assert "ENCRYIP_" + f.name.upper() in help_text


def test_switch_from_flag_and_env(tmp_path: Path) -> None:
    assert not ServerConfig.from_args([str(tmp_path)], environ={}).allow_insecure_token
    flag = ServerConfig.from_args([str(tmp_path), "--allow-insecure-token"], environ={})
    env = ServerConfig.from_args([str(tmp_path)], environ={"ENCRYIP_ALLOW_INSECURE_TOKEN": "1"})
    assert flag.allow_insecure_token and env.allow_insecure_token
    with pytest.raises(ConfigError, match="ENCRYIP_ALLOW_INSECURE_TOKEN: not a boolean"):
        ServerConfig.from_args([str(tmp_path)], environ={"ENCRYIP_ALLOW_INSECURE_TOKEN": "maybe"})


def test_token_over_plaintext_refused_unless_allowed(tmp_path: Path) -> None:
    """Defect: a bearer token over plaintext started silently. Now refused unless allowed."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    with pytest.raises(ConfigError, match="--allow-insecure-token"):
        ServerConfig.from_args([str(tmp_path), "--token-file", str(token)], environ={})
    cfg = ServerConfig.from_args(
        [str(tmp_path), "--token-file", str(token), "--allow-insecure-token"], environ={}
    )
    assert cfg.read_token() == b"s3cret"
