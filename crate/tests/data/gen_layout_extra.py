# Curated adversarial texts for layout_extra.jsonl; the expected layouts come from the reference itself.
# Regenerate (in this directory): python3 gen_layout_extra.py > layout_extra.jsonl &&
#   python3 ../../../../shared/tools/ref_render.py layout layout_extra.jsonl OUT && cp OUT/layout.jsonl layout_extra_ref.jsonl
import json, random
R = random.Random(7)
rows = []
def add(id, text): rows.append({"id": id, "text": text})
two = " ".join(["word"] * 30)
add("full-page-then-empty-para", "\n".join([two] * 21 + ["short"] * 9 + ["line"] * 30) + "\n")
add("tabs-crlf", ("col1\tcol2\t\tcol3\r\nline two  with   spaces\r\n\ttabbed line\r\n \t mixed \t lead\r\n" * 60))
add("ws-only-1", " ")
add("ws-only-2", "\n")
add("ws-only-3", "\t\n  \n\r\n")
add("blank-runs", "\n".join(("para %d text" % i) + "\n" * (i % 5) for i in range(200)))
add("longwords-kind1", "\n".join(("x" * R.randint(80, 700)) + (" tail" if i % 3 else "") for i in range(90)))
add("longword-kind0-multipage", " ".join(("y" * R.randint(1, 12)) if R.random() > 0.02 else "z" * 1500 for _ in range(1500)))
add("kind0-multipage", " ".join(R.choice(["alpha", "be", "c", "delta-epsilon", "(x+1)", "2^10=1024"]) for _ in range(4000)))
add("entities", "\n".join("a & b < c > d &amp; e  f   g <br/> &nbsp; x&y<z>w " * R.randint(1, 12) for _ in range(90)))
add("nbsp-shy-zwsp-ctrl", "\n".join("lit\u00a0nbsp\u00a0 x \u00adsoft\u00adhy \u200bzw\u200bsp nul\x00x ctl\x01\x7f vt\x0bff\x0c fs\x1cus\x1f nel\x85 ls\u2028ps\u2029 ideo\u3000sp " * R.randint(1, 8) for _ in range(60)))
add("edge-spaces", "\n".join(R.choice(["  lead", "trail  ", " one ", "   ", " ", "a  ", "  b  c  "]) * R.randint(1, 40) for _ in range(200)))
cjk = "设函数满足求的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看"
add("cjk-multiline", "\n".join("".join(R.choice(cjk + "，。、  ab ") for _ in range(R.randint(0, 300))) + R.choice(["", " f(x) = 2x ", "。", "！"]) for _ in range(130)))
add("cjk-single-line", "".join(R.choice(cjk + "，。、 abc (1) ") for _ in range(12000)))
add("cjk-words", "\n".join(" ".join("".join(R.choice("abcdefghij") for _ in range(R.randint(1, 15))) for _ in range(R.randint(1, 60))) + "中" for _ in range(110)))
for r in rows:
    print(json.dumps(r, ensure_ascii=False))
