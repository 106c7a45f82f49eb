"""annotate's engines, which run the planned shards: this process, N worker processes, or a
Ray actor pool (docs/annotate.md#on-ray). Each returns the shards' results, and each shows
its progress through the same bar. A bad record in a worker process or a Ray actor comes back
as data, in its shard's result, and the main process raises it as the same BadInput that one
process raises: Ray Data re-raises an exception of the actor's code wrapped in its own
(UserCodeException), so its type and one-line message would be lost on the way."""

import os
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from wasabi import msg

from .annotate_input import BadInput, Options, Shard
from .annotate_shards import ShardResult, annotate_shard

ROOT = Path(__file__).resolve().parent.parent
SHARD_FIELDS = [f.name for f in fields(Shard)]
RESULT_FIELDS = [f.name for f in fields(ShardResult)]


def load_pipeline(model: str, gpu_id: int = -1):
    import spacy

    from scripts import architectures  # noqa: F401  (the trained pipelines' custom layers)

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    return spacy.load(model)


@contextmanager
def progress_bar(total: int, desc: str) -> Iterator[Callable[[int, int], None]]:
    """progress(texts, words): the texts done so far move the bar, and the words give it the
    words/s since it started."""
    from tqdm import tqdm

    started, words = time.perf_counter(), 0
    with tqdm(total=total, unit=" texts", desc=desc, smoothing=0.05) as bar:

        def progress(texts: int, doc_words: int) -> None:
            nonlocal words
            words += doc_words
            rate = words / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} words/s", refresh=False)
            bar.update(texts)

        yield progress


def run_local(
    model: str, todo: List[Shard], out: Path, opts: Options, gpu_id: int, total: int
) -> List[ShardResult]:
    """This process, one shard after the other; the bar moves with every text."""
    nlp = load_pipeline(model, gpu_id)
    with progress_bar(total, "annotate") as progress:
        return [annotate_shard(nlp, shard, out, opts, progress) for shard in todo]


def annotate_elsewhere(nlp, spec: Dict, out: Path, opts: Options) -> ShardResult:
    """One shard in a worker process or a Ray actor: a bad record's message comes back in the
    result, for `collect` to raise."""
    shard = Shard(**spec)
    try:
        return annotate_shard(nlp, shard, out, opts)
    except BadInput as err:
        return ShardResult(shard.index, stopped=str(err))


def collect(
    finished: Iterable[ShardResult], todo: List[Shard], total: int, desc: str
) -> List[ShardResult]:
    """The results of shards annotated elsewhere, as they finish; the bar moves a shard at a
    time. The first shard stopped by a bad record raises its BadInput here."""
    sizes = {s.index: s.count for s in todo}
    results: List[ShardResult] = []
    with progress_bar(total, desc) as progress:
        for result in finished:
            if result.stopped:
                raise BadInput(result.stopped)
            results.append(result)
            progress(sizes[result.index], result.words)
    return results


_WORKER: Dict = {}  # a worker process's pipeline and settings (run_processes)


def _worker_init(model: str, out: str, opts: Dict, threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)  # the processes share the cores
    except ImportError:
        pass
    _WORKER.update(nlp=load_pipeline(model), out=Path(out), opts=Options(**opts))


def _worker_run(spec: Dict) -> ShardResult:
    return annotate_elsewhere(_WORKER["nlp"], spec, _WORKER["out"], _WORKER["opts"])


def run_processes(
    model: str, todo: List[Shard], out: Path, opts: Options, n_process: int, total: int
) -> List[ShardResult]:
    """n_process worker processes, each loading the pipeline once and annotating and writing
    whole shards, as the Ray actors do. (spaCy's nlp.pipe(n_process=...) sends every doc back
    to the parent process: on 2 cores that ran at 0.81x one process, benchmarks/RESULTS.md.)"""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork and torch's threads do not mix
    threads = max(1, (os.cpu_count() or 1) // n_process)
    with ctx.Pool(n_process, _worker_init, (model, str(out), asdict(opts), threads)) as pool:
        finished = pool.imap_unordered(_worker_run, [asdict(s) for s in todo])
        return collect(finished, todo, total, f"annotate ({n_process} processes)")


class ShardAnnotator:
    """A Ray actor: loads the pipeline once, then annotates and writes the shards it is given."""

    def __init__(self, model: str, out: str, opts: Dict, use_gpu: bool):
        self.nlp = load_pipeline(model, 0 if use_gpu else -1)  # Ray shows each actor its GPU as 0
        self.out = Path(out)
        self.opts = Options(**opts)

    def __call__(self, batch: Dict) -> Dict:
        import numpy

        results = [
            annotate_elsewhere(
                self.nlp, dict(zip(SHARD_FIELDS, map(plain, values))), self.out, self.opts
            )
            for values in zip(*(batch[k] for k in SHARD_FIELDS))
        ]
        return {k: numpy.array([getattr(r, k) for r in results]) for k in RESULT_FIELDS}


def plain(value):
    """A value of a Ray Data batch or row as Python's own type (numpy's int64 -> int)."""
    return value.item() if hasattr(value, "item") else value


def run_ray(
    model: str,
    todo: List[Shard],
    out: Path,
    opts: Options,
    actors: int,
    gpus_per_actor: Optional[float],
    total: int,
) -> List[ShardResult]:
    import logging

    import ray

    address = os.environ.get("RAY_ADDRESS")
    # the workers import this package from the copy Ray ships them (a cluster has no checkout)
    runtime_env = {
        "py_modules": [str(ROOT / "scripts")],
        "env_vars": {"TOKENIZERS_PARALLELISM": "false"},
    }
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": runtime_env}
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=max(actors, os.cpu_count() or 1), include_dashboard=False, **quiet)
    try:
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        msg.info(
            f"Ray: {actors} actor(s), {gpus_per_actor:g} GPU each, "
            f"cluster {ray.cluster_resources()}"
        )
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([asdict(s) for s in todo], override_num_blocks=max(len(todo), 1))
        annotated = ds.map_batches(
            ShardAnnotator,
            fn_constructor_kwargs={
                "model": model,
                "out": str(Path(out).resolve()),
                "opts": asdict(opts),
                "use_gpu": gpus_per_actor > 0,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            num_gpus=gpus_per_actor,
        )
        # closed before ray.shutdown: a Ray Data iterator left open reports to a stopped Ray
        with closing(iter(annotated.iter_rows())) as rows:
            finished = (ShardResult(**{k: plain(v) for k, v in row.items()}) for row in rows)
            return collect(finished, todo, total, "annotate (ray)")
    finally:
        ray.shutdown()
