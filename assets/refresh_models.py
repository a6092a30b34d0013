#!/usr/bin/env python3
"""Regenerate assets/models.json, the built-in model data (kind, context window, max output, prices, retirement),
from models.dev (https://github.com/anomalyco/models.dev, MIT) plus the hand-written rows of assets/models_hand.json.

    python assets/refresh_models.py                      # downloads models.dev's current tarball from GitHub
    python assets/refresh_models.py --source DIR         # a models.dev checkout (or a bare git dir: read at HEAD)

The app reads only the snapshot this writes: it never needs the internet to start.

Why models.dev (compared 2026-12-07): it covers this catalog's providers best, the Chinese ones included
(alibaba-cn, moonshotai-cn, zhipuai, zhipuai-coding-plan, minimax-cn, siliconflow-cn, stepfun, bailing = Ant Ling,
deepseek, xai, cloudflare-workers-ai, novita, openrouter, groq, mistral, cohere, amazon-bedrock, google-vertex);
it has per model the context window, max output tokens, input/output and cache read/write prices, and a
"deprecated" status; it is MIT-licensed and updated daily. LiteLLM's model_prices_and_context_window.json has
kinds and deprecation dates but weaker Chinese coverage (no Ark/Doubao chat ids, few Qwen) and is a 1.6 MB file
inside a 1.4 GB repository; Pydantic's genai-prices has prices only (no output limit, no kinds, no dates) and of the
Chinese providers only DeepSeek, Moonshot, Zhipu and MiniMax. Retirement dates and the providers models.dev lacks
(Baidu, Xunfei, 360, Tencent Hunyuan, Baichuan, 01.AI, Doubao, Jina, TEI, ...) are hand-written rows, marked
"hand": true in the snapshot.

Prices are written in aiproxy's shape: USD per 1K tokens (`input_price`, `output_price`, `cached_price`,
`cache_creation_price`); models.dev's are USD per 1M tokens.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import posixpath
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARBALL = "https://codeload.github.com/anomalyco/models.dev/tar.gz/refs/heads/dev"

#: our provider type -> the models.dev providers whose models it serves (first one wins on a shared id)
SOURCES: dict[str, list[str]] = {
    "1": ["openai"], "3": ["azure"], "4": ["azure"], "12": ["google"], "14": ["anthropic"], "16": ["zhipuai"],
    "17": ["alibaba-cn"], "20": ["openrouter"], "24": ["google"], "25": ["moonshotai-cn"], "27": ["minimax-cn"],
    "28": ["mistral"], "29": ["groq"], "32": ["stepfun"], "33": ["amazon-bedrock"], "35": ["cohere"],
    "36": ["deepseek"], "37": ["cloudflare-workers-ai"], "41": ["novita-ai"],
    "42": ["google-vertex", "google-vertex-anthropic"], "43": ["siliconflow-cn"], "45": ["xai"],
    "52": ["zhipuai-coding-plan"], "54": ["bailing"],
}


class Source:
    """models.dev's files: a directory, a bare git dir (read at HEAD), or a tarball's members."""

    def __init__(self, files: dict[str, bytes], revision: str, date: str) -> None:
        self.files, self.revision, self.date = files, revision, date

    @classmethod
    def from_dir(cls, path: Path) -> Source:
        if (path / "HEAD").exists() and not (path / "providers").exists():  # a bare git dir: its HEAD's files
            git = ["git", "--git-dir", str(path)]
            archive = subprocess.check_output(git + ["archive", "--format=tar", "HEAD", "providers", "models"])
            rev, date = subprocess.check_output(git + ["log", "-1", "--format=%H %cs"], text=True).split()
            return cls.from_tar(archive, rev, date, strip=False)
        files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*.toml")
                 if p.relative_to(path).parts[0] in ("providers", "models")}
        return cls(files, "working tree", dt.date.today().isoformat())

    @classmethod
    def download(cls) -> Source:
        with urllib.request.urlopen(TARBALL, timeout=120) as answer:
            return cls.from_tar(answer.read(), TARBALL, dt.date.today().isoformat(), strip=True)

    @classmethod
    def from_tar(cls, data: bytes, revision: str, date: str, strip: bool) -> Source:
        """The .toml files of a tar (GitHub's tarball has one top folder: `strip`); a symlink (models.dev links
        a model shared by two providers) reads as the file it points to."""
        files: dict[str, bytes] = {}
        links: dict[str, str] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1] if strip else member.name
                if not name.endswith(".toml") or not name.startswith(("providers/", "models/")):
                    continue
                if member.issym():
                    links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                elif member.isfile():
                    files[name] = tar.extractfile(member).read()
        for name, target in links.items():
            while target in links:
                target = links[target]
            if target in files:
                files[name] = files[target]
        return cls(files, revision, date)

    def toml(self, name: str) -> dict[str, Any]:
        return tomllib.loads(self.files[name].decode("utf-8"))

    def models_of(self, provider: str) -> dict[str, dict[str, Any]]:
        prefix = f"providers/{provider}/models/"
        out = {}
        for name in sorted(self.files):
            if name.startswith(prefix):
                out[name[len(prefix):-len(".toml")]] = self.resolved(self.toml(name))
        return out

    def resolved(self, row: dict[str, Any]) -> dict[str, Any]:
        """A provider's model with its `base_model` facts merged in (models.dev's own merge rules: tables deep,
        everything else replaced by the child, then `base_model_omit` paths removed)."""
        base = row.pop("base_model", None)
        omit = row.pop("base_model_omit", [])
        if base:
            row = _deep_merge(self.resolved(self.toml(f"models/{base}.toml")), row)
        for path in omit:
            *parents, leaf = path.split(".")
            node = row
            for part in parents:
                node = node.get(part, {})
            node.pop(leaf, None)
        return row


def _deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def kind_of(model: str, row: dict[str, Any]) -> str | None:
    """Our kind (assets/providers.json) from a models.dev row; None for what no kind serves (video)."""
    name, family = model.lower(), str(row.get("family", "")).lower()
    outputs = set(row.get("modalities", {}).get("output", ["text"]))
    inputs = set(row.get("modalities", {}).get("input", ["text"]))
    if "rerank" in name or "rerank" in family:
        return "rerank"
    if "embed" in name or "embed" in family:
        return "embedding"
    if "moderation" in name:
        return "moderation"
    if outputs == {"image"}:
        return "image"
    if outputs == {"audio"}:
        return "tts"
    if "video" in outputs:
        return None
    if inputs == {"audio"} and outputs == {"text"}:
        return "stt"
    return "chat"


def per_1k(value: Any) -> float | None:
    """models.dev's USD per 1M tokens as aiproxy's USD per 1K tokens."""
    return None if value is None else round(float(value) / 1000, 10)


def row_of(model: str, kind: str, src: dict[str, Any]) -> dict[str, Any]:
    cost, limit = src.get("cost", {}), src.get("limit", {})
    row: dict[str, Any] = {"model": model, "kind": kind}
    for ours, theirs in (("context", "context"), ("max_output", "output")):
        if limit.get(theirs):
            row[ours] = int(limit[theirs])
    for ours, theirs in (("input_price", "input"), ("output_price", "output"), ("cached_price", "cache_read"),
                         ("cache_creation_price", "cache_write")):
        if cost.get(theirs) is not None:
            row[ours] = per_1k(cost[theirs])
    if src.get("status") == "deprecated":
        row["deprecated"] = True
    if src.get("release_date"):
        row["released"] = str(src["release_date"])
    return row


def build(source: Source, providers: dict[str, Any], hand: dict[str, Any]) -> dict[str, Any]:
    retired = hand.get("retired", {})
    types: dict[str, list[dict[str, Any]]] = {}
    for type_id, provider in providers.items():
        if type_id.startswith("_"):
            continue
        kinds = set(provider.get("kinds") or ["chat", "embedding", "rerank", "moderation", "stt", "tts", "image"])
        rows: dict[str, dict[str, Any]] = {}
        for name in SOURCES.get(type_id, []):
            for model, src in source.models_of(name).items():
                kind = kind_of(model, src)
                if kind in kinds and model not in rows:
                    rows[model] = row_of(model, kind, src)
        # hand-written rows: assets/models_hand.json's, then providers.json's for a kind models.dev has none of
        # for this type (all of them for a type models.dev lacks; speech, moderation, ... for the others)
        dataset_kinds = {row["kind"] for row in rows.values()}
        catalog_rows = [e for e in provider.get("models", []) if e.get("kind", "chat") not in dataset_kinds]
        for entry in hand.get("models", {}).get(type_id, []) + catalog_rows:
            kind = entry.get("kind", "chat")
            if kind in kinds and entry["model"] not in rows:
                rows[entry["model"]] = {**{k: v for k, v in entry.items() if k != "source"}, "kind": kind,
                                        "hand": True}
        for model, row in rows.items():
            if model in retired and int(type_id) in retired[model].get("types", [int(type_id)]):
                row["retired"] = retired[model]["date"] or True
        types[type_id] = sorted(rows.values(), key=_order)
    return {
        "_source": {
            "dataset": "models.dev", "repository": "https://github.com/anomalyco/models.dev", "license": "MIT",
            "revision": source.revision, "revision_date": source.date,
            "hand_written": "assets/models_hand.json and each provider's \"models\" in assets/providers.json",
            "prices": "USD per 1K tokens (aiproxy's unit); null or absent: unknown",
            "regenerate": "python assets/refresh_models.py [--source DIR]",
        },
        "types": types,
    }


def _order(row: dict[str, Any]) -> tuple:
    """Current models first (newest release first), then deprecated and retired ones; kinds kept together."""
    old = bool(row.get("deprecated") or row.get("retired"))
    released = row.get("released", "")
    return (old, list(KIND_ORDER).index(row["kind"]) if row["kind"] in KIND_ORDER else 9,
            "".join(chr(255 - ord(c)) for c in released) if released else "\uffff", row["model"])


KIND_ORDER = ("chat", "embedding", "rerank", "moderation", "stt", "tts", "image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="a models.dev checkout or bare git dir (default: download)")
    parser.add_argument("--out", type=Path, default=HERE / "models.json")
    args = parser.parse_args(argv)
    source = Source.from_dir(args.source) if args.source else Source.download()
    providers = json.loads((HERE / "providers.json").read_text(encoding="utf-8"))
    hand = json.loads((HERE / "models_hand.json").read_text(encoding="utf-8"))
    snapshot = build(source, providers, hand)
    text = json.dumps(snapshot, ensure_ascii=False, indent=None, separators=(",", ":"))
    # one model a line: diffs of a refresh stay readable
    text = text.replace('},{"model"', '},\n{"model"').replace(':[{"model"', ':[\n{"model"')
    args.out.write_text(text + "\n", encoding="utf-8")
    counts = {t: len(rows) for t, rows in snapshot["types"].items()}
    hand_rows = sum(1 for rows in snapshot["types"].values() for r in rows if r.get("hand"))
    print(f"{args.out.name}: {sum(counts.values())} rows over {len(counts)} types, {hand_rows} hand-written",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
