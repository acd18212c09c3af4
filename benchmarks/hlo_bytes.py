"""Bytes each kernel of a compiled step reads and writes, from its optimized HLO text, grouped by
the model code that made it: a roofline estimate for memory-bound work that needs no device.

Reads an `hlo_*.txt` written by `benchmarks/profile_step.py` (the compiled step's `as_text()`),
takes every top-level instruction of its ENTRY computation that launches work (fusions, custom
calls, copies, scatters), and of the while loops it runs (scanned layers, once per trip), and
counts its operands' and results' bytes: what the kernel must move through device memory at
least once (of an operand a fusion only slices, the slices' bytes; of a buffer it updates in
place, the update's).
Library matmuls (cuBLAS) are listed apart: they are bound by FLOPs, and their scratch buffer is
not traffic. Groups are the instruction's `op_name` metadata with layer indices folded, forward
and backward apart, so "bwd encoder/L/intermediate" sums the feed-forward backward of all
layers.

    python benchmarks/hlo_bytes.py benchmarks/results/profile/hlo_bert_full_default.txt
    python benchmarks/hlo_bytes.py HLO --bandwidth 3.35 --top 20   # ms at 3.35 TB/s, 20 groups
    python benchmarks/hlo_bytes.py OUT/hlo_bert_full.txt.gz  # from throughput.py --save_hlo
"""

import argparse
import collections
import gzip
import re

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
               "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}  # fmt: skip
SHAPE = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([0-9,]*)\]")
INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = (.*?) ([a-z][\w-]*)\((.*?)\)(, .*)?$")
# fusion-done only waits for its fusion-start, which is where the kernel's bytes are charged.
NO_WORK = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "fusion-done"}
# A fusion-start is XLA's asynchronous form of a fusion (in a scanned layer's loop, the slicing of
# one layer's weights and the stacking of its residuals).
FUSIONS = ("fusion", "fusion-start")
# A library matmul is a custom call whose target names one (cuBLAS, cuBLASLt); cuDNN's attention
# kernels are not, though their backend config names its "gemm" dimension numbers.
LIBRARY_MATMUL = re.compile(r"cublas|gemm|matmul", re.IGNORECASE)
CALL_TARGET = re.compile(r'custom_call_target="([^"]*)"')
COMPUTATION = re.compile(r"^%?([\w.\-]+) \(.*\) -> .*\{$")


def shape_bytes(text: str, skip_scratch: bool = False) -> int:
    """Bytes of every array shape in `text` (a result type or a tuple of them)."""
    total = 0
    for dtype, dims in SHAPE.findall(text):
        if skip_scratch and dtype == "s8":  # a library call's workspace, not data
            continue
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += count * DTYPE_BYTES[dtype]
    return total


def computations(hlo: str) -> dict[str, list[str]]:
    """Instruction lines of every computation but ENTRY, by name (fusions' bodies)."""
    found, name = {}, None
    for line in hlo.split("\n"):
        header = COMPUTATION.match(line)
        if header:
            name = header.group(1)
            found[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            found[name].append(line)
    return found


def _body(body: list[str]) -> tuple[list[tuple], dict[str, int], dict[str, int]]:
    """A fusion body's instructions other than its parameters and their bitcasts, as (name,
    result bytes, op, operand names, is root); the parameter number of each parameter and of
    each bitcast of one; and the result bytes of every instruction."""
    instructions, params, sizes = [], {}, {}
    for line in body:
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, result, op, operands, _ = m.groups()
        sizes[name] = shape_bytes(result)
        names = re.findall(r"%([\w.\-]+)", operands)
        if op == "parameter":
            params[name] = int(operands)
        elif op == "bitcast" and names and names[0] in params:
            params[name] = params[names[0]]
        else:
            instructions.append((name, sizes[name], op, names, line.lstrip().startswith("ROOT")))
    return instructions, params, sizes


def sliced_reads(body: list[str]) -> dict[int, int]:
    """Parameter number -> bytes read, for each parameter of a fusion body that reaches only
    slices (through bitcasts): the slices' bytes, not the whole operand's. XLA merges matmuls
    that share an input, and the fusions after a merged matmul each read a slice of its output.
    A parameter reduced and then sliced (a split-K matmul's partial sums, summed in the fusion
    that reads one leaf of a packed weight gradient) is read in the slices' share."""
    instructions, params, sizes = _body(body)
    users = collections.defaultdict(list)  # name -> (user, op, user's result bytes)
    for name, result_bytes, op, names, _ in instructions:
        for operand in names:
            users[operand].append((name, op, result_bytes))

    def sliced(name):
        """Bytes of `name` its users read where they all slice it, else None."""
        uses = users[name]
        if uses and all(op in ("slice", "dynamic-slice") for _, op, _ in uses):
            return sum(b for _, _, b in uses)
        return None

    def read(name):
        """Bytes of parameter `name` its users read, None where one of them reads it whole."""
        direct = sliced(name)
        if direct is not None:
            return direct
        share = 0.0  # of the parameter, through reductions that are only sliced
        for user, op, size in users[name]:
            part = sliced(user) if op == "reduce" else None
            if part is None:
                return None
            share += part / size
        return int(sizes[name] * min(share, 1.0))

    reads, whole = collections.Counter(), set()
    for name, number in params.items():
        if not users[name]:
            continue
        got = read(name)
        if got is None:
            whole.add(number)
        else:
            reads[number] += got
    return {n: b for n, b in reads.items() if n not in whole}


def in_place_update(body: list[str]) -> tuple[int, int] | None:
    """(buffer parameter number, update bytes) of a fusion whose root is a dynamic-update-slice
    of one of its parameters (through a bitcast or not): XLA writes the update into that
    buffer in place (a scan stacking one layer's residuals), so the kernel moves the update,
    not the buffer."""
    instructions, params, sizes = _body(body)
    for _, _, op, names, root in instructions:
        if root and op == "dynamic-update-slice" and names[0] in params:
            return params[names[0]], sizes.get(names[1], 0)
    return None


def root_bytes(body: list[str]) -> int:
    """The result bytes of a computation's ROOT instruction."""
    root = next(line for line in body if line.lstrip().startswith("ROOT "))
    return shape_bytes(INSTRUCTION.match(root).group(2))


def entry_kernels(hlo: str) -> list[dict]:
    """Every work-launching instruction of the ENTRY computation, and of the bodies of the
    while loops it runs (scanned layers) once per trip: name, op, bytes, op_name, launches."""
    entry = hlo[hlo.index("\nENTRY") :]
    bodies = computations(hlo[: hlo.index("\nENTRY")])
    header, *lines = entry.split("\n")
    sizes = {name: shape_bytes(typ) for name, typ in re.findall(r"([\w.\-]+): ([^,)]+\])", header)}
    return _kernels(lines, bodies, sizes, 1)


def _kernels(lines: list[str], bodies: dict, sizes: dict, trips: int) -> list[dict]:
    kernels = []
    for line in lines:
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, result, op, operands, attrs = m.groups()
        attrs = attrs or ""
        target = CALL_TARGET.search(attrs)
        matmul = op == "custom-call" and bool(target and LIBRARY_MATMUL.search(target.group(1)))
        sizes[name] = shape_bytes(result, skip_scratch=matmul)
        if op in NO_WORK:
            continue
        if op == "while":  # its body's kernels, once per trip (1 when XLA does not know)
            body = re.search(r"body=%([\w.\-]+)", attrs).group(1)
            n = re.search(r'known_trip_count":\{"n":"(\d+)"', attrs)
            n = int(n.group(1)) if n else 1
            kernels += _kernels(bodies.get(body, []), bodies, sizes, trips * n)
            continue
        calls = re.search(r"calls=%([\w.\-]+)", attrs)
        body = bodies.get(calls.group(1), []) if op in FUSIONS and calls else []
        read_as = sliced_reads(body)
        written = sizes[name]
        if op == "fusion-start":  # result: ((operands), output, context); it writes the output
            written = root_bytes(body)
        update = in_place_update(body)
        if update:
            read_as[update[0]], written = 0, update[1]
        names = re.findall(r"%([\w.\-]+)", operands)
        # an operand passed twice is one buffer: read once at most (a Pallas kernel takes the
        # packed queries, keys and values three times and reads a third of them each time)
        reads = collections.Counter()
        for i, o in enumerate(names):
            reads[o] = min(reads[o] + read_as.get(i, sizes.get(o, 0)), sizes.get(o, 0))
        read = sum(reads.values())
        op_name = re.search(r'op_name="([^"]*)"', attrs)
        kernels.append(
            dict(
                name=name,
                op=op,
                bytes=(read + written) * trips,
                matmul=matmul or "gemm" in name,
                op_name=op_name.group(1) if op_name else "",
                launches=trips,
            )
        )
    return kernels


def group_of(op_name: str, depth: int = 3) -> str:
    """'fwd encoder/L/intermediate' style keys: layer indices folded, autodiff wrappers
    dropped, the first `depth` path parts kept."""
    backward = "transpose(" in op_name
    path = re.sub(r"^jit\([^)]*\)/", "", op_name)
    path = re.sub(r"(transpose\()?jvp\(\w*\)\)?/?", "", path)
    path = re.sub(r"layer_\d+", "L", path)
    return ("bwd " if backward else "fwd ") + ("/".join(path.split("/")[:depth]) or "(step)")


def summarize(kernels: list[dict], depth: int = 3) -> dict:
    groups = collections.defaultdict(lambda: [0, 0])
    for k in kernels:
        key = "library matmuls" if k["matmul"] else group_of(k["op_name"], depth)
        groups[key][0] += k["bytes"]
        groups[key][1] += k["launches"]
    other = sum(b for key, (b, _) in groups.items() if key != "library matmuls")
    launches = sum(k["launches"] for k in kernels)
    return dict(groups=dict(groups), memory_bound_bytes=other, kernels=launches)


def report(summary: dict, bandwidth_tb_s: float, top: int) -> str:
    gb = summary["memory_bound_bytes"] / 1e9
    lines = [
        f"{summary['kernels']} kernels; outside library matmuls {gb:.2f} GB moved, "
        f"{gb / bandwidth_tb_s:.2f} ms at {bandwidth_tb_s} TB/s",
        "| group | GB | ms | kernels |",
        "|---|---|---|---|",
    ]
    ranked = sorted(summary["groups"].items(), key=lambda kv: -kv[1][0])
    for key, (n_bytes, count) in ranked[:top]:
        ms = "" if key == "library matmuls" else f"{n_bytes / 1e9 / bandwidth_tb_s:.3f}"
        lines.append(f"| {key} | {n_bytes / 1e9:.3f} | {ms} | {count} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "hlo",
        help="an optimized HLO text file (profile_step.py's hlo_*.txt, or throughput.py "
        "--save_hlo's hlo_*.txt.gz)",
    )
    p.add_argument("--bandwidth", type=float, default=3.0, help="TB/s, for the ms column")
    p.add_argument("--depth", type=int, default=3, help="op_name path parts per group")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    opener = gzip.open if args.hlo.endswith(".gz") else open
    with opener(args.hlo, "rt") as f:
        summary = summarize(entry_kernels(f.read()), args.depth)
    print(report(summary, args.bandwidth, args.top))
    return summary


if __name__ == "__main__":
    main()
