"""TaskConfig.canonical: one key per field, whatever the spelling, so merged settings cannot disagree."""

from nlpcli.tasks.ie.ner.pipeline import NerConfig


def test_two_spellings_of_a_field_merge_into_one_key_and_the_later_wins():
    cfg = NerConfig()
    recipe = cfg.canonical({"encoder.hidden_size": 96, "threads": 1})
    user = cfg.canonical({"hidden-size": 16, "encoder": {"dropout": 0.0}, "max_len": 128})
    merged = recipe | user
    assert merged == {
        "encoder.hidden_size": 16,
        "trainer.threads": 1,
        "encoder.dropout": 0.0,
        "windows.window": 128,  # an old name (`inference.max_len` before format 3) lands where it moved
    }
    assert cfg.updated(merged).encoder.hidden_size == 16
