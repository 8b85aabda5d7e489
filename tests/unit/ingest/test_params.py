"""User options become exact job parameters; a bad option names the key and the allowed values."""

from __future__ import annotations

from fractions import Fraction

import pytest

from infiniteflow_common.events import MediaProbe
from services.ingest.params import (
    InvalidParams,
    ParamDefaults,
    check_against_probe,
    format_fps,
    output_fps,
    parse_fps,
    parse_params,
)

DEFAULTS = ParamDefaults()


def _probe(num: int = 30, den: int = 1, *, vfr: bool = False, avg: tuple[int, int] = (30, 1)) -> MediaProbe:
    return MediaProbe(
        format_name="mov,mp4,m4a,3gp,3g2,mj2",
        video_codec="h264",
        width=320,
        height=180,
        pix_fmt="yuv420p",
        bit_depth=8,
        fps_num=num,
        fps_den=den,
        avg_fps_num=avg[0],
        avg_fps_den=avg[1],
        frame_count=60,
        duration_s=2.0,
        is_vfr=vfr,
        rotation=0,
        color_range=None,
        color_space=None,
        color_transfer=None,
        color_primaries=None,
        has_audio=False,
        audio_streams=0,
        subtitle_streams=0,
    )


def test_no_options_take_the_configured_defaults() -> None:
    params = parse_params({}, ParamDefaults(multiplier=4, engine="flow", quality="best"))
    assert (params.multiplier, params.target_fps, params.engine, params.quality, params.webhook_url) == (
        4,
        None,
        "flow",
        "best",
        None,
    )


@pytest.mark.parametrize("value", ["2", "4", "8", " 8 ", "x4"])
def test_multipliers_two_four_and_eight_are_accepted(value: str) -> None:
    assert parse_params({"multiplier": value}, DEFAULTS).multiplier == int(value.strip().strip("x"))


@pytest.mark.parametrize("value", ["3", "16", "0", "-2", "two", "2.0", "1e3"])
def test_other_multipliers_are_refused_with_the_allowed_values(value: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params({"multiplier": value}, DEFAULTS)
    assert caught.value.code == "E_PARAM_INVALID"
    assert "multiplier" in caught.value.message
    assert "2, 4, 8" in caught.value.message


@pytest.mark.parametrize(
    ("text", "wire", "exact"),
    [
        ("60", "60", Fraction(60)),
        ("60000/1001", "60000/1001", Fraction(60000, 1001)),
        ("120000/2002", "60000/1001", Fraction(60000, 1001)),
        ("59.94", "2997/50", Fraction(2997, 50)),
        ("48.0", "48", Fraction(48)),
    ],
)
def test_target_fps_is_kept_as_an_exact_rational(text: str, wire: str, exact: Fraction) -> None:
    assert parse_fps(text) == exact
    assert parse_params({"target-fps": text}, DEFAULTS).target_fps == wire


@pytest.mark.parametrize("text", ["0", "0/0", "60/0", "-60", "abc", "1e2", "60 fps", "100000", "nan"])
def test_bad_target_fps_is_refused(text: str) -> None:
    with pytest.raises(InvalidParams, match="target-fps"):
        parse_params({"target-fps": text}, DEFAULTS)


def test_form_field_spellings_work_like_metadata_keys() -> None:
    params = parse_params(
        {"target_fps": "60000/1001", "webhook_url": "https://h.example/x", "ENGINE": "FLOW"}, DEFAULTS
    )
    assert (params.target_fps, params.webhook_url, params.engine, params.multiplier) == (
        "60000/1001",
        "https://h.example/x",
        "flow",
        None,
    )


def test_multiplier_and_target_fps_together_are_refused() -> None:
    with pytest.raises(InvalidParams, match="either multiplier or target-fps"):
        parse_params({"multiplier": "2", "target-fps": "60"}, DEFAULTS)


def test_empty_values_count_as_absent() -> None:
    assert parse_params({"multiplier": "", "engine": "  ", "webhook-url": ""}, DEFAULTS).multiplier == 2


def test_unknown_metadata_keys_are_ignored() -> None:
    assert parse_params({"content-disposition": "x", "owner": "me"}, DEFAULTS).engine == "rife"


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [("engine", "dain", "rife, flow"), ("quality", "ultra", "fast, tta, best")],
)
def test_unknown_engine_or_quality_names_the_choices(key: str, value: str, allowed: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params({key: value}, DEFAULTS)
    assert key in caught.value.message
    assert allowed in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "//host/path",
        "http://user:pw@host/",
        "http://host/a b",
        "http://host/\nx",
        "http://höst/",
        "http://host:99999/",
        "https://" + "a" * 3000,
    ],
)
def test_webhook_urls_must_be_plain_http_or_https(url: str) -> None:
    with pytest.raises(InvalidParams, match="webhook-url"):
        parse_params({"webhook-url": url}, DEFAULTS)


def test_output_rate_is_input_times_multiplier_or_the_target() -> None:
    ntsc = _probe(24000, 1001, avg=(24000, 1001))
    assert format_fps(output_fps(parse_params({"multiplier": "2"}, DEFAULTS), ntsc)) == "48000/1001"
    assert format_fps(output_fps(parse_params({"target-fps": "60"}, DEFAULTS), ntsc)) == "60"
    vfr = _probe(30, 1, vfr=True, avg=(400, 19))
    assert output_fps(parse_params({"multiplier": "4"}, DEFAULTS), vfr) == Fraction(1600, 19)


@pytest.mark.parametrize("target", ["30", "24", "241"])
def test_a_target_rate_must_raise_the_rate_by_at_most_eight_times(target: str) -> None:
    with pytest.raises(InvalidParams, match="must be above"):
        check_against_probe(parse_params({"target-fps": target}, DEFAULTS), _probe())
    check_against_probe(parse_params({"target-fps": "240"}, DEFAULTS), _probe())


def test_the_model_defaults_to_auto_and_accepts_each_known_model() -> None:
    assert parse_params({}, DEFAULTS).model == "auto"
    assert parse_params({"model": "HDv3"}, DEFAULTS).model == "hdv3"
    assert parse_params({"model": " v4.25 "}, DEFAULTS).model == "v4.25"
    assert parse_params({}, ParamDefaults(model="v4.25")).model == "v4.25"


def test_an_unknown_model_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params({"model": "v9"}, DEFAULTS)
    assert caught.value.code == "E_PARAM_INVALID"
    assert "model='v9'" in caught.value.message
    assert "auto, hdv3, v4.25" in caught.value.message


def test_the_api_form_field_model_reaches_the_object_metadata_and_back() -> None:
    from services.ingest.api.upload_form import OPTION_FIELDS
    from services.ingest.params import params_metadata as _params_metadata

    assert "model" in OPTION_FIELDS
    params = parse_params({"model": "v4.25", "multiplier": "4"}, DEFAULTS)
    metadata = _params_metadata(params)
    assert metadata["model"] == "v4.25"
    assert parse_params(metadata, DEFAULTS) == params


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://" + "a" * 64 + ".example.com/hook", "E_WEBHOOK_URL_INVALID"),
        ("http://hooks..example.com/hook", "E_WEBHOOK_URL_INVALID"),
        ("https://bad_name.example.com/hook", "E_WEBHOOK_URL_INVALID"),
        ("http://2130706433/hook", "E_WEBHOOK_URL_INVALID"),
        ("http://100.100.100.200/latest/meta-data", "E_WEBHOOK_DESTINATION_REFUSED"),
        ("http://10.0.0.5:8080/hook", "E_WEBHOOK_DESTINATION_REFUSED"),
        ("http://[fd00:ec2::254]/hook", "E_WEBHOOK_DESTINATION_REFUSED"),
        ("http://127.0.0.1:9000/hook", "E_WEBHOOK_DESTINATION_REFUSED"),
    ],
)
def test_webhook_hosts_follow_idna_rules_and_literal_addresses_must_be_public(url: str, code: str) -> None:
    with pytest.raises(InvalidParams, match="webhook-url") as caught:
        parse_params({"webhook-url": url}, DEFAULTS)
    assert caught.value.code == code


def test_loopback_webhooks_are_accepted_only_where_local_development_allows_them() -> None:
    local = ParamDefaults(webhook_allowed=("127.0.0.1",))
    assert parse_params({"webhook-url": "http://127.0.0.1:9/h"}, local).webhook_url == "http://127.0.0.1:9/h"
    with pytest.raises(InvalidParams):
        parse_params({"webhook-url": "http://100.64.0.1/h"}, local)
    assert parse_params({"webhook-url": "https://93.184.216.34/h"}, DEFAULTS).webhook_url is not None


def test_a_job_without_a_priority_has_priority_0() -> None:
    assert parse_params({}, DEFAULTS).priority == 0
    assert parse_params({"priority": "  "}, DEFAULTS).priority == 0


@pytest.mark.parametrize(
    ("given", "priority"), [("40", 40), ("-50", -50), ("50", 50), ("+7", 7), (" -3 ", -3), ("0", 0)]
)
def test_a_priority_from_minus_50_to_50_is_taken_as_given(given: str, priority: int) -> None:
    assert parse_params({"priority": given}, DEFAULTS).priority == priority


@pytest.mark.parametrize("given", ["51", "-51", "1000000000", "high", "1.5", "4e1", "--1", "٤٠"])
def test_a_priority_that_is_not_an_integer_from_minus_50_to_50_is_refused(given: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_params({"priority": given}, DEFAULTS)
    assert caught.value.code == "E_PARAM_INVALID"
    assert caught.value.message.startswith(f"priority={given!r} is not allowed")
    assert "from -50 to 50" in caught.value.message


def test_the_priority_comes_from_object_metadata_and_the_api_form_alike() -> None:
    from services.ingest.api.upload_form import OPTION_FIELDS
    from services.ingest.params import params_metadata as _params_metadata

    # `x-amz-meta-priority` reaches the parser as the metadata key `priority`; the form field is `priority`.
    assert "priority" in OPTION_FIELDS
    params = parse_params({"priority": "-20", "multiplier": "2"}, DEFAULTS)
    metadata = _params_metadata(params)
    assert metadata["priority"] == "-20"
    assert parse_params(metadata, DEFAULTS) == params
