from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
BASE = ["input.manifest=m.jsonl", "output.path=out"]


def test_shipped_config_is_valid_and_overrides_apply():
    cfg = load_config(REPO / "configs" / "transcribe.yaml", ["asr.pool.max_size=4", "asr.gpus_per_actor=0.5", "asr.language=de"])
    assert cfg.asr.pool.max_size == 4
    assert cfg.asr.gpus_per_actor == 0.5
    assert cfg.asr.language == "de"
    assert cfg.asr.model == "Qwen/Qwen3-ASR-0.6B"
    assert cfg.asr.max_chunk_s == 60


def test_set_parses_yaml_values():
    cfg = load_config(None, BASE + ["input.storage_options={endpoint_url: 'http://127.0.0.1:9'}", "asr.context=", "input.limit=null"])
    assert cfg.input.storage_options == {"endpoint_url": "http://127.0.0.1:9"}
    assert cfg.asr.context == ""
    assert cfg.input.limit is None


@pytest.mark.parametrize(
    "override, field",
    [
        ("asr.max_chunk_s=0", "asr.max_chunk_s"),
        ("asr.engine.gpu_memory_utilization=1.5", "asr.engine.gpu_memory_utilization"),
        ("asr.pool.min_size=3", "asr.pool"),  # min 3 > max 1
        ("asr.batchsize=3", "asr.batchsize"),  # unknown keys are errors, not ignored
        ("input.format=xml", "input.format"),
        ("decode.batch_size=many", "decode.batch_size"),
        ("asr.language=klingon", "asr.language"),  # language tags are checked once, naming the tag
        ("align.language=xx-YY", "align.language"),
        ("input.language=klingon", "input.language"),
        ("output.formats=[docx]", "output.formats"),
        ("output.subtitle_options.min_duration_s=0", "output.subtitle_options.min_duration_s"),
        ("align.sentences.max_pause_s=0", "align.sentences.max_pause_s"),
    ],
)
def test_errors_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(None, BASE + [override])
    assert field in str(e.value)


def test_missing_required_sections():
    with pytest.raises(ConfigError, match="output"):
        load_config(None, ["input.manifest=m.jsonl"])


def test_bad_set_syntax_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["asr.model"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_output_formats_and_language_tags():
    cfg = load_config(
        None, BASE + ["output.formats=[jsonl, srt, txt, json, tsv, vtt]", "align.enabled=true", "asr.language=auto", "input.language=zh-HK"]
    )
    assert cfg.output.subtitle_formats == ["srt", "vtt"] and cfg.output.file_formats == ["jsonl", "txt", "json", "tsv"]
    assert cfg.output.subtitle_options.min_duration_s == 0.3
    assert (cfg.align.sentences.max_pause_s, cfg.align.sentences.max_duration_s) == (1.0, 30.0)
    cfg = load_config(None, BASE + ["output.subtitles=[vtt]", "output.formats=[srt, vtt]", "align.enabled=true"])
    assert cfg.output.subtitle_formats == ["vtt", "srt"]
    assert load_config(None, BASE + ["output.formats=[jsonl, txt]"]).output.file_formats == ["jsonl", "txt"]
    with pytest.raises(ConfigError, match="align.enabled"):
        load_config(None, BASE + ["output.formats=[srt]"])  # subtitles need word times
