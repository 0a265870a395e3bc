"""The evaluation job's config: the protocol is enforced whatever the config says, test-set styles
map their columns, names are safe folder names."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.evaluate import EvaluateConfig, set_rows, to_markdown
from tests.test_transcribe_e2e import REPO


def test_the_shipped_config_validates_and_enforces_the_protocol():
    cfg = load_config(REPO / "configs" / "evaluate.yaml", ["asr.max_new_tokens=7", "asr.language=fr", "asr.context=hi"],
                      schema=EvaluateConfig)  # fmt: skip
    job = cfg.job_config(cfg.test_sets[0])
    assert job.asr.max_new_tokens == 1024 and job.asr.language is None and job.asr.context == ""
    assert job.asr.language_hints is False and job.score.enabled and job.output.overwrite
    assert job.output.path.endswith("/synthetic-en-de-fr")


def test_styles_map_columns_and_a_set_language_fills_rows():
    cfg = EvaluateConfig.model_validate({"test_sets": [
        {"name": "cv-fr", "manifest": "s3://b/test.tsv", "style": "common_voice", "audio_root": "s3://b/clips"},
        {"name": "fleurs-de", "manifest": "gs://b/test.tsv", "style": "fleurs", "language": "de",
         "column_map": {"audio": "file_name"}},
    ]})  # fmt: skip
    cv, fleurs = (cfg.job_config(s) for s in cfg.test_sets)
    assert cv.input.column_map == {"audio": "path", "reference": "sentence", "language_hint": "locale"}
    assert fleurs.input.column_map == {"audio": "file_name", "reference": "raw_transcription"}
    assert fleurs.input.language == "de" and cv.input.audio_root == "s3://b/clips"


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 65])
def test_a_test_set_name_is_a_plain_folder_name(name):
    with pytest.raises(ConfigError):
        load_config(None, ["test_sets=[{name: '%s', manifest: m.jsonl}]" % name], schema=EvaluateConfig)


def test_duplicate_names_are_refused():
    with pytest.raises(ConfigError, match="unique"):
        load_config(None, ["test_sets=[{name: a, manifest: m.jsonl}, {name: a, manifest: n.jsonl}]"], schema=EvaluateConfig)


def test_the_table_has_the_whole_set_then_each_language():
    metrics = {
        "engine_rtfx": 50.0, "throughput_audio_s_per_s": 20.0, "audio_hours": 0.1,
        "language_id": {"rows": 10, "correct": 9, "accuracy": 0.9},
        "wer": {
            "corpus": {"word": {"rows": 10, "errors": 5, "substitutions": 3, "deletions": 1, "insertions": 1,
                                "ref_units": 50, "error_rate": 0.1}},
            "by_language": [{"language": "en", "unit": "word", "rows": 10, "errors": 5, "substitutions": 3,
                             "deletions": 1, "insertions": 1, "ref_units": 50, "error_rate": 0.1,
                             "language_id_accuracy": 0.9}],
        },
    }  # fmt: skip
    rows = set_rows("ls-clean", metrics)
    assert [(r["language"], r["unit"]) for r in rows] == [("all", "word"), ("en", "word")]
    md = to_markdown({"model": "m", "table": rows, "sets": [{"name": "ls-clean", "rows_failed": 0}], "versions": {"vllm": "1"}})
    assert "| ls-clean | all | WER 10.00 | 3 | 1 | 1 | 50 | 10 | 90.00 | 50.0 | 20.0 |" in md
