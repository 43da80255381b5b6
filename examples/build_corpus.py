"""Writes examples/corpus.parquet, the small nested-form corpus the README's first command scores.

Run it again after editing the candidates below: python examples/build_corpus.py
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CANDIDATES: dict[str, list[str]] = {
    "how do I renew my passport": [
        "To renew a passport, fill in the renewal form, attach a recent photo and mail your old passport.",
        "Passport renewals take six to eight weeks; expedited service costs an extra fee.",
        "The tallest mountain in Europe is Mount Elbrus in the Caucasus.",
        "Sourdough bread needs a starter that has been fed for several days.",
        "Airlines may refuse boarding if your passport expires within six months.",
    ],
    "symptoms of vitamin d deficiency": [
        "Low vitamin D can cause bone pain, muscle weakness, fatigue and frequent infections.",
        "Vitamin D is made in the skin when it is exposed to sunlight.",
        "A balanced budget lists income and expenses for each month.",
        "Children lacking vitamin D may develop rickets, a softening of the bones.",
        "The Python interpreter reads source files encoded in UTF-8 by default.",
    ],
    "best way to store fresh herbs": [
        "Wrap soft herbs like parsley in a damp paper towel and keep them in the fridge.",
        "Basil keeps best at room temperature in a glass of water, like cut flowers.",
        "Redis is an in-memory data store often used as a message broker.",
        "Rosemary and thyme can be dried by hanging them upside down in a dry room.",
        "The Tour de France usually finishes on the Champs-Élysées in Paris.",
    ],
    "why is the sky blue": [
        "Sunlight is scattered by air molecules, and blue light scatters more than red: Rayleigh scattering.",
        "At sunset light travels through more air, so the blues scatter away and the sky turns red.",
        "Blue whales are the largest animals known to have ever lived.",
        "Interest rates rose sharply after the central bank's announcement.",
        "Ocean water looks blue partly because water absorbs red light.",
    ],
    "how to reset a forgotten wifi password": [
        "Log in to the router's admin page, open the wireless settings and set a new network key.",
        "Pressing the router's reset button for ten seconds restores the factory password on its label.",
        "Cats sleep between twelve and sixteen hours a day.",
        "A saved network's password can be shown in the operating system's network settings.",
        "The Great Wall of China is not visible to the naked eye from orbit.",
    ],
}


def build(path: Path) -> None:
    queries = list(CANDIDATES)
    table = pa.table(
        {
            "query_id": pa.array([f"q{i + 1}" for i in range(len(queries))]),
            "query": pa.array(queries),
            "candidates": pa.array(
                [
                    [{"doc_id": f"q{i + 1}-d{j + 1}", "text": text} for j, text in enumerate(CANDIDATES[q])]
                    for i, q in enumerate(queries)
                ],
                type=pa.list_(pa.struct([("doc_id", pa.string()), ("text", pa.string())])),
            ),
        }
    )
    pq.write_table(table, path)


if __name__ == "__main__":
    build(Path(__file__).with_name("corpus.parquet"))
