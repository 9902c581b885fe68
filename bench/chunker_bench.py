"""Chunker throughput: microseconds per delta for growing replies.

Run: ``.venv/bin/python bench/chunker_bench.py``. Streams markdown-heavy English and
Spanish replies of ~1 KB, 10 KB and 100 KB in 1-, 4- and 50-character deltas and prints
the time per ``push`` (mean, p99, max). The work per delta must stay flat as replies
grow: the chunker never rescans what it already emitted.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.chunker import Chunker, ChunkerConfig

EN = """## Getting started

Sure! Dr. Smith said the setup takes approx. 10 minutes, e.g. on a laptop. Here is the plan:

1. Install **Python 3.11** (see [the docs](https://docs.python.org/3/using/index.html)).
2. Run `pip install voice-gateway==1.2.3` and wait... it takes a while.
3. Open `config.yaml` and set the port to 8080.

The U.S. team tested it at 5 p.m. Then they wrote a report, which said: "It works." \
Prices start at $3.50 per hour, i.e. 1,000.50 a month. Isn't that nice?! Let me know.
- Fast *enough* for most cases
- Costs less than the old one

"""

ES = """## Primeros pasos

¡Claro! La Sra. Ortiz dice que la instalación tarda aprox. 10 minutos, p. ej. en un portátil.

1. Instala **Python 3.11** (ver [la guía](https://docs.python.org/es/3/)).
2. Ejecuta `pip install voice-gateway` y espera... tarda un poco.
3. Abre la pág. 5 del manual; son las 10 a. m. en EE. UU. ahora.

¿Ud. vino ayer? El equipo lo probó a las 17.30 h. Luego escribió: «Funciona.» \
Cuesta 1.000,50 € al mes, etc. ¿Te parece bien?, dijo. ¡Avísame!
- Bastante *rápido* para casi todo
- Cuesta menos que el anterior

"""


def reply(template: str, size: int) -> str:
    """A reply of about ``size`` characters made of whole copies of ``template``."""
    return template * max(1, round(size / len(template)))


def measure(text: str, language: str, step: int) -> tuple[float, float, float, int]:
    """Stream ``text`` in ``step``-char deltas; µs per push: mean, p99, max; chunk count."""
    chunker = Chunker(ChunkerConfig(language=language))
    times: list[float] = []
    chunks = 0
    clock = time.perf_counter_ns
    for i in range(0, len(text), step):
        delta = text[i : i + step]
        start = clock()
        chunks += len(chunker.push(delta))
        times.append((clock() - start) / 1000)
    chunks += len(chunker.flush())
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.fmean(times), p99, times[-1], chunks


def main() -> None:
    for template in (EN, ES):  # warm-up: regex caches, first-call costs
        measure(reply(template, 2000), "en", 4)
    print(
        f"{'lang':<5}{'size':>9}{'delta':>7}{'pushes':>9}{'chunks':>8}"
        f"{'mean µs':>10}{'p99 µs':>9}{'max µs':>9}"
    )
    for language, template in (("en", EN), ("es", ES)):
        for step in (4, 1, 50):
            for size in (1_000, 10_000, 100_000):
                text = reply(template, size)
                mean, p99, worst, chunks = measure(text, language, step)
                pushes = -(-len(text) // step)
                print(
                    f"{language:<5}{len(text):>9}{step:>7}{pushes:>9}{chunks:>8}"
                    f"{mean:>10.2f}{p99:>9.2f}{worst:>9.2f}"
                )


if __name__ == "__main__":
    main()
