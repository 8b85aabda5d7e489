"""An upload's options are parsed once, where they arrive, into the models the job carries."""

from __future__ import annotations

import pytest

from services.ingest.params import (
    ParamDefaults,
    output_metadata,
    params_metadata,
    parse_options,
    parse_output_options,
    parse_params,
)

ALL = ParamDefaults(encoders=frozenset({"libx264", "libx265", "libsvtav1", "libaom-av1"}))


def test_the_form_fields_become_the_params_and_output_options_the_job_carries() -> None:
    form = {"multiplier": "4", "codec": "h265", "crf": "20", "webhook_url": "https://hooks.example.com/h"}
    options = parse_options(form, ALL)
    assert options.error is None
    assert options.params == parse_params(form, ALL)
    assert options.output == parse_output_options(form, ALL)
    assert options.output is not None
    assert options.output.crf == 20


def test_the_metadata_written_for_an_upload_parses_back_to_the_same_options() -> None:
    form = {"target_fps": "59.94", "codec": "av1", "bitrate": "8M", "dedupe": "true", "priority": "-3"}
    options = parse_options(form, ALL)
    assert options.params is not None
    assert options.output is not None
    metadata = params_metadata(options.params) | output_metadata(options.output)
    again = parse_options(metadata, ALL)
    assert (again.params, again.output, again.error) == (options.params, options.output, None)


@pytest.mark.parametrize(
    ("given", "bad_params", "bad_output"),
    [
        ({"multiplier": "3", "crf": "x"}, True, True),
        ({"multiplier": "3"}, True, False),
        ({"crf": "x"}, False, True),
    ],
)
def test_a_bad_option_is_kept_as_the_error_the_start_fails_the_job_with(
    given: dict[str, str], bad_params: bool, bad_output: bool
) -> None:
    options = parse_options(given, ALL)
    assert (options.params is None, options.output is None) == (bad_params, bad_output)
    # the params are checked first, as before: their problem is the one the user is told
    assert options.error is not None
    assert ("multiplier" in options.error.message) == bad_params
    assert options.requested == given
