"""Writes the small NER sample files shipped with nlpcli (run once; output is committed).

Sentences are built from hand-written templates and fillers, so a tiny model can learn them
in seconds: the fast tests and the README quickstart use them.
"""

import json
import random

rng = random.Random(7)
NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴婷", "徐明", "孙丽"]
PLACES = ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆"]
COMPANIES = ["华为公司", "阿里巴巴", "腾讯公司", "百度公司", "小米公司", "京东集团", "网易公司"]
POSITIONS = ["总经理", "工程师", "记者", "教授", "主任", "董事长", "设计师"]
GAMES = ["王者荣耀", "英雄联盟", "魔兽世界", "CSOL", "梦幻西游"]
TEMPLATES = [
    "{name}在{place}的{company}担任{position}。",
    "{company}{position}{name}昨天抵达{place}。",
    "记者从{place}获悉，{name}将加盟{company}。",
    "{name}最近迷上了{game}，每天都要玩两个小时。",
    "{place}举办的{game}比赛吸引了{company}的关注。",
    "据{company}介绍，{name}已被任命为{position}。",
]
TYPES = {"name": "name", "place": "address", "company": "company", "position": "position", "game": "game"}
POOLS = {"name": NAMES, "place": PLACES, "company": COMPANIES, "position": POSITIONS, "game": GAMES}


def sentence():
    template = rng.choice(TEMPLATES)
    text, label, pos = "", {}, 0
    for part in template.replace("}", "{").split("{"):
        if part in POOLS:
            value = rng.choice(POOLS[part])
            label.setdefault(TYPES[part], {}).setdefault(value, []).append([len(text), len(text) + len(value) - 1])
            text += value
        else:
            text += part
    return {"text": text, "label": label}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


write_jsonl("train.jsonl", [sentence() for _ in range(240)])
write_jsonl("dev.jsonl", [sentence() for _ in range(40)])
write_jsonl("input.jsonl", [{"id": i, "text": sentence()["text"]} for i in range(5)])

# Nested (CMeEE-style JSON array): a body part inside a symptom.
BODY = ["肺", "肝", "胃", "心脏", "肾", "皮肤"]
SYM = ["{b}内病变", "{b}部疼痛", "{b}功能异常", "{b}出血"]
nested = []
for _ in range(120):
    b = rng.choice(BODY)
    sym = rng.choice(SYM).format(b=b)
    prefix = rng.choice(["研究证实，", "患者出现", "检查发现", "临床表现为"])
    text = f"{prefix}{sym}，需要进一步治疗。"
    s = len(prefix)
    nested.append({"text": text, "entities": [
        {"start_idx": s, "end_idx": s + len(b) - 1, "type": "bod", "entity": b},
        {"start_idx": s, "end_idx": s + len(sym) - 1, "type": "sym", "entity": sym},
    ]})
with open("nested.json", "w", encoding="utf-8") as f:
    json.dump(nested, f, ensure_ascii=False, indent=1)

# Char-per-line BIO (People's Daily style tags).
with open("bio.txt", "w", encoding="utf-8") as f:
    for _ in range(60):
        name, place = rng.choice(NAMES), rng.choice(PLACES)
        text = f"{name}今天去了{place}。"
        tags = ["B-PER"] + ["I-PER"] * (len(name) - 1) + ["O"] * 4 + ["B-LOC"] + ["I-LOC"] * (len(place) - 1) + ["O"]
        for ch, tag in zip(text, tags):
            f.write(f"{ch} {tag}\n")
        f.write("\n")
