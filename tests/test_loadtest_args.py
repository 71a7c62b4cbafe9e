"""Bad arguments to quart-app-loadtest: exit 2 with a message, before anything is sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quart_app.tools.loadtest import LoadConfig, main
from quart_app.tools.server import ROOT

from helpers.server import refused

# Nobody listens on port 1: a run that started anyway would fail fast, not hang.
URL = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-d", "nan"], "--duration: must be a finite number"),
        (["-d", "inf"], "--duration: must be a finite number"),
        (["-d", "0"], "--duration: must be above 0"),
        (["-d", "-1"], "--duration: must be above 0"),
        (["-n", "0"], "--requests: must be at least 1"),
        (["-n", "-5"], "--requests: must be at least 1"),
        (["-c", "0"], "--concurrency: must be at least 1"),
        (["--timeout", "nan"], "--timeout: must be a finite number"),
        (["--timeout", "0"], "--timeout: must be above 0"),
        (["--verify-timeout", "-1", "--verify", "log.txt"], "--verify-timeout: must be at least 0"),
        (["--verify-timeout", "inf", "--verify", "log.txt"], "--verify-timeout: must be a finite"),
        (["--verify-settle", "-1", "--verify", "log.txt"], "--verify-settle: must be at least 0"),
        (["--verify-settle", "nan", "--verify", "log.txt"], "--verify-settle: must be a finite"),
        (["--rate", "nan"], "--rate: must be a finite number"),
        (["--rate", "0"], "--rate: must be above 0"),
        (["--drop-late"], "--drop-late needs --rate (an open-loop run)"),
        (["--arrivals", "poisson"], "--arrivals needs --rate (an open-loop run)"),
        # Past the bounds: numbers that would overflow, or allocate for ever.
        (["-d", "1e308"], "--duration: must be at most 604,800 (a week), not '1e308'"),
        (["-d", "1e300", "--rate", "100"], "--duration: must be at most 604,800"),
        (["--rate", "1e-300", "-n", "3"], "--rate: must be at least 0.001, not '1e-300'"),
        (["--rate", "1e9", "-d", "0.5"], "--rate: must be at most 1,000,000, not '1e9'"),
        (["--timeout", "1e308"], "--timeout: must be at most 3,600 (an hour), not '1e308'"),
        (["--rate", "100", "-d", "1", "-c", "100000000"], "--concurrency: must be at most 100,000"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_bad_numbers_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in refused([URL, "-q", *argv], capsys)


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000", "localhost:8000", "ftp://127.0.0.1:8000", "http://"]
)
def test_a_url_without_http_or_https_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused([url, "-n", "5", "-q"], capsys)
    assert "URL must be http://HOST[:PORT] or https://HOST[:PORT]" in err


@pytest.mark.parametrize(
    "settings",
    [
        {"duration": float("nan")},
        {"duration": float("inf")},
        {"requests": 10, "timeout": float("nan")},
        {"requests": 0},
        {"requests": 10, "concurrency": 0},
    ],
)
def test_config_refuses_what_the_cli_refuses(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadConfig(URL, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv",
    [
        ["--prefix", " lt-"],  # the server strips it: every login would read as missing
        ["--prefix", "lt- "],
        ["--prefix", "a,b-"],  # escaped in the text log
        ["--prefix", "a\\b-"],
        ["--prefix", "名-"],
        ["--run-id", "two words"],
    ],
    ids=repr,
)
def test_usernames_the_server_would_change_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([URL, "-n", "5", "-q", *argv], capsys)
    assert "may only contain ASCII letters, digits and . _ ~ -" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verify", ""], "--verify: needs a log file or a postgresql:// URL, not ''"),
        (["--plot", ""], "--plot: needs a file name, not ''"),
        (["--run-id", ""], "--run-id: needs at least one character, not ''"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_an_empty_option_exits_2_rather_than_being_skipped(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([URL, "-n", "3", "-q", *argv], capsys)
    assert message in err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/?a=b",
        "http://127.0.0.1:8000?",
        "http://127.0.0.1:8000#frag",
        "http://127.0.0.1:8000/#",
        "http://127.0.0.1:8000/login/",
        "http://127.0.0.1:8000/app",
    ],
)
def test_a_url_with_a_path_query_or_fragment_exits_2(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The requests would go to .../?a=b/login/: --path says where they go.
    err = refused([url, "-n", "3", "-q"], capsys)
    assert "URL must be http://HOST[:PORT] or https://HOST[:PORT]" in err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/a/..",  # normalised to / by yarl, sent as /a/../login/
        "http://127.0.0.1:1/%2e%2e",
        "http://127.0.0.1:1/.",
        "http://127.0.0.1:1//",
        " http://127.0.0.1:1",
        "http://127.0.0.1:1 ",
        "http://127.0.0.1:1\t",
    ],
    ids=repr,
)
def test_a_url_whose_path_is_more_than_a_slash_or_with_whitespace_exits_2(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([url, "-n", "3", "-q"], capsys)
    assert "URL must be http://HOST[:PORT] or https://HOST[:PORT]" in err


@pytest.mark.parametrize("path", ["/login/?username=evil", "/login/#x", "login/", ""])
def test_a_path_with_a_query_or_fragment_or_not_from_the_root_exits_2(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([URL, "-n", "3", "-q", "--path", path], capsys)
    assert "argument --path: must start with / and hold no ? or #" in err


@pytest.mark.parametrize(("url", "path"), [("http://h:8000/", "/"), ("https://h", "/login/")])
def test_a_base_url_and_a_path_make_the_target(url: str, path: str) -> None:
    assert LoadConfig(url, requests=1, path=path).target == "/".join([url.rstrip("/"), path[1:]])


@pytest.mark.parametrize(
    "settings",
    [
        {"duration": 1e308},
        {"duration": 1, "rate": 1e-300},
        {"duration": 1, "rate": 1e9},
        {"requests": 1, "timeout": 1e308},
        {"duration": 1, "concurrency": 10**8},
    ],
)
def test_config_refuses_numbers_out_of_bounds(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LoadConfig(URL, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("/nonexistent/x.png", "argument --plot: no directory '/nonexistent'"),
        ("x.txt", "argument --plot: cannot draw a .txt file; "),
        ("x", "argument --plot: needs a file name ending in .png"),
        (".", "argument --plot: '.' is a directory"),
    ],
)
def test_a_plot_that_cannot_be_written_exits_2_before_the_run(
    plot: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # whatever goes wrong is written there
    err = refused([URL, "-n", "3", "-q", "--plot", plot], capsys)
    assert message in err


@pytest.mark.parametrize("option", [["--prefix", "x-"], ["--run-id", "r1"]], ids=" ".join)
def test_no_usernames_with_a_username_option_exits_2(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([URL, "-n", "3", "-q", "--no-usernames", *option], capsys)
    assert f"{option[0]} makes usernames that --no-usernames turns off" in err


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # As `quart-app-loadtest ... | head -3`: the summary's reader closes its end.
    command = [sys.executable, "-m", "quart_app.tools.loadtest", URL, "-n", "3", "-q"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as done:
        assert done.stdout is not None
        done.stdout.close()
        _, err = done.communicate(timeout=30)
    assert err == ""
    assert done.returncode == 141  # as a shell reports a command ended by SIGPIPE


@pytest.mark.parametrize(
    ("argv", "longest"),
    [
        (["--prefix", "a" * 242, "--run-id", "abcdefghijkl", "-n", "200"], 258),
        (["--prefix", "a" * 250, "-n", "10"], 260),  # the random run id is 8 characters
        (["--prefix", "a" * 243, "--run-id", "r", "-d", "1"], 257),  # -d: 12 digits
    ],
    ids=["-n 200", "random run id", "-d"],
)
def test_usernames_longer_than_the_server_takes_exit_2(
    argv: list[str], longest: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server answers 400 to each: nothing would be logged, or verified.
    err = refused([URL, "-q", *argv], capsys)
    assert f"usernames of up to {longest} characters" in err
    assert "above 256, the server's default USERNAME_MAX_LENGTH" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--prefix", "a" * 241, "--run-id", "abcdefghijkl", "-n", "100"],
        ["--prefix", "a" * 242, "--run-id", "r", "-d", "0.2", "--rate", "10"],
    ],
    ids=["-n", "-d"],
)
def test_usernames_of_exactly_the_servers_length_are_sent(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([URL, "-q", *argv]) == 0
    assert "errors " in capsys.readouterr().out  # sent, to nobody


def test_help_says_how_long_usernames_may_be(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "at most 256 characters (the server's default USERNAME_MAX_LENGTH)" in out
