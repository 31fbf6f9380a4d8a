"""arXiv-shaped JSON lines of any size: the metadata snapshot's fields and length distribution.

Each record has the Cornell snapshot's fields (id, submitter, authors, title, comments,
journal-ref, doi, report-no, categories, license, abstract, versions, update_date,
authors_parsed) with realistic shapes: abstracts log-normal around 1,000 characters, titles of
5-20 words, 1-12 authors, a few versions, primary categories drawn with the snapshot's rough
shares (computer science and mathematics first, old pre-2007 codes like "alg-geom" rare).
Records average about 1.9 KB, as the real 4.8 GB / 2.4M records. Seeded: the same arguments write
the same bytes.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

# (primary category, weight): rough shares of the snapshot's primary categories
PRIMARY = [
    ("cs.LG", 8), ("cs.CV", 6), ("cs.CL", 4), ("cs.AI", 2), ("cs.IT", 2), ("cs.RO", 1),
    ("math.CO", 3), ("math.AP", 3), ("math.PR", 2), ("math.AG", 2), ("math.NT", 2),
    ("math.OC", 2), ("math-ph", 1), ("hep-th", 4), ("hep-ph", 5), ("hep-ex", 1),
    ("quant-ph", 5), ("astro-ph.GA", 3), ("astro-ph.CO", 2), ("astro-ph", 2), ("gr-qc", 2),
    ("cond-mat.mes-hall", 3), ("cond-mat.mtrl-sci", 3), ("cond-mat.str-el", 2),
    ("physics.optics", 2), ("physics.flu-dyn", 1), ("nucl-th", 1), ("nlin.CD", 1),
    ("stat.ME", 2), ("stat.ML", 2), ("eess.SP", 2), ("eess.IV", 1), ("q-bio.NC", 1),
    ("q-bio.PE", 1), ("q-fin.ST", 0.5), ("econ.EM", 0.5), ("alg-geom", 0.1), ("chao-dyn", 0.1),
    ("cmp-lg", 0.05), ("bayes-an", 0.02), ("funct-an", 0.05), ("solv-int", 0.05),
]
CROSS = ["cs.LG", "stat.ML", "math.OC", "cs.AI", "math-ph", "physics.comp-ph", "cs.IT",
         "math.PR", "cond-mat.stat-mech", "quant-ph", "hep-ph", "eess.SY", "q-bio.QM"]
LICENSES = [None, None, "http://arxiv.org/licenses/nonexclusive-distrib/1.0/",
            "http://creativecommons.org/licenses/by/4.0/"]
_SYLLABLES = ["al", "be", "co", "de", "en", "fi", "ga", "ho", "in", "ju", "ka", "lo", "ma",
              "ne", "or", "pi", "qu", "ra", "si", "to", "un", "ve", "wa", "xe", "yo", "ze",
              "tion", "ment", "ic", "al", "ous", "ing", "er", "ity", "ive"]


def _words(rng: random.Random, n: int = 3000) -> list[str]:
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


class ArxivRecords:
    """Seeded records; `record(i)` is the i-th."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.words = _words(random.Random(1))
        self.codes = [c for c, _ in PRIMARY]
        self.weights = [w for _, w in PRIMARY]
        self.names = [(w.title(), self.rng.choice("ABCDEFGHJKLMNPRSTW")) for w in self.words[:400]]

    def _text(self, n: int) -> str:
        return " ".join(self.rng.choices(self.words, k=n))

    def record(self, i: int) -> dict:
        rng = self.rng
        primary = rng.choices(self.codes, self.weights)[0]
        cats = [primary, *rng.sample(CROSS, k=rng.choice([0, 0, 1, 1, 2, 3]))]
        authors = rng.sample(self.names, k=min(12, 1 + int(rng.expovariate(0.4))))
        # abstract length: log-normal, median ~1,100 characters (~165 words), long right tail
        n_words = max(15, min(600, int(math.exp(rng.gauss(5.1, 0.45)))))
        year, month = rng.randint(7, 24), rng.randint(1, 12)
        versions = [{"version": f"v{v + 1}", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}
                    for v in range(rng.choice([1, 1, 1, 2, 2, 3]))]
        return {
            "id": f"{year:02d}{month:02d}.{i % 100000:05d}",
            "submitter": f"{authors[0][1]}. {authors[0][0]}",
            "authors": ", ".join(f"{first}. {last}" for last, first in authors),
            "title": self._text(rng.randint(5, 20)).capitalize(),
            "comments": rng.choice([None, f"{rng.randint(4, 40)} pages, {rng.randint(1, 12)} "
                                   "figures", "Accepted at a conference"]),
            "journal-ref": rng.choice([None, None, f"J. Phys. {rng.randint(1, 99)} (2008) 1"]),
            "doi": rng.choice([None, f"10.1103/PhysRevD.{rng.randint(10, 99)}.{i}"]),
            "report-no": rng.choice([None, None, None, f"REPORT-{i}"]),
            "categories": " ".join(cats),
            "license": rng.choice(LICENSES),
            "abstract": "  " + self._text(n_words).capitalize() + ".\n",
            "versions": versions,
            "update_date": f"20{year:02d}-{month:02d}-{rng.randint(10, 28)}",
            "authors_parsed": [[last, f"{first}.", ""] for last, first in authors],
        }


def write_arxiv_jsonl(path: Path, target_bytes: int | None = None, records: int | None = None,
                      seed: int = 0) -> int:
    """Write records until `target_bytes` (or `records` records); returns the record count."""
    source = ArxivRecords(seed)
    written = n = 0
    with open(path, "w", encoding="utf-8") as f:
        while (records is None or n < records) and (target_bytes is None or written < target_bytes):
            line = json.dumps(source.record(n)) + "\n"
            f.write(line)
            written += len(line)
            n += 1
    return n
