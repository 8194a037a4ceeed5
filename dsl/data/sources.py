"""Built-in data sources, declared statically (pure Python, no torch).

Splits, stated once: tables (``digits``, ``iris``, ``wine``,
``breast_cancer``, files) are split 60/20/20 into train/val/test, stratified
by label and seeded; features are standardised with the training split's mean
and standard deviation. Graph sources give one full graph whose masks select
the labelled and the evaluated nodes. Generated sources draw their train, val
and test items independently from the seed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from dsl.data.registry import Source, SourceParams, register_source
from dsl.language.shapes import Sym, TensorType

B = Sym("B")


def _t(*shape: Any, dtype: str = "float") -> TensorType:
    return TensorType(tuple(Sym(d) if isinstance(d, str) else d for d in shape), dtype)


# --------------------------------------------------------------------------- tables


class TableParams(SourceParams):
    batch: int = Field(64, gt=0, description="rows per batch")
    val: float = Field(0.2, ge=0, lt=1, description="fraction held out for validation")
    test: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing")
    standardize: bool = Field(True, description="scale features with the training split's statistics")
    seed: int | None = Field(None, description="split seed (default: the train section's seed)")


TABLES: dict[str, tuple[str, int, int]] = {
    # name: (scikit-learn loader, features, classes)
    "digits": ("load_digits", 64, 10),
    "iris": ("load_iris", 4, 3),
    "wine": ("load_wine", 13, 3),
    "breast_cancer": ("load_breast_cancer", 30, 2),
}


class DigitsParams(TableParams):
    images: bool = Field(False, description="x as 8x8 images [B, 1, 8, 8], standardised per channel")


def _table_source(name: str, loader: str, features: int, classes: int) -> Source:
    def fields(p: TableParams) -> dict[str, TensorType]:
        if getattr(p, "images", False):
            return {"x": _t("B", 1, 8, 8), "y": _t("B", dtype="long")}
        return {"x": _t("B", features), "y": _t("B", dtype="long")}

    def load(p: TableParams, seed: int) -> Any:
        from dsl.data.loaders import load_sklearn

        return load_sklearn(loader, p, seed)

    return Source(
        name=name,
        kind="table",
        params=DigitsParams if name == "digits" else TableParams,
        fields=fields,
        load=load,
        doc=f"scikit-learn's bundled `{name}` set: x [B, {features}] standardised, y [B] long in 0..{classes - 1}"
        + ("; with images=true x is [B, 1, 8, 8]" if name == "digits" else ""),
        ranges=lambda p: {"y": classes},
    )


for _name, (_loader, _feat, _cls) in TABLES.items():
    register_source(_table_source(_name, _loader, _feat, _cls))


# --------------------------------------------------------------------------- chars

CHARS_VOCAB = 96  # ids: printable ASCII 0..94 and newline 95 (declared here, where no torch is imported)


class CharsParams(SourceParams):
    context: int = Field(128, gt=0, le=65536, description="characters per window (T)")
    batch: int = Field(32, gt=0, description="windows per batch")
    path: str | None = Field(None, description="a UTF-8 text file; default: the generated corpus")
    chars: int = Field(200_000, ge=1000, le=50_000_000, description="length of the generated corpus")
    max_bytes: int = Field(256 * 2**20, gt=0, description="largest text file read")
    seed: int | None = Field(None, description="corpus seed (default: the train section's seed)")
    base_dir: str = Field("", description="directory relative paths are resolved against (the spec's)")


def _chars_fields(p: CharsParams) -> dict[str, TensorType]:
    return {"tokens": _t("B", p.context, dtype="long"), "next": _t("B", p.context, dtype="long")}


def _chars_load(p: CharsParams, seed: int) -> Any:
    from dsl.data.corpus import load_chars

    return load_chars(p, seed)


register_source(
    Source(
        "chars",
        "table",
        CharsParams,
        _chars_fields,
        _chars_load,
        doc="characters as ids < 96 (printable ASCII 0..94, newline 95): tokens [B, context] long and next "
        "[B, context] long, the character after each; split 90/5/5 in order. Without `path` a generated "
        "corpus whose entropy per character (the best loss possible) is known and kept in meta.json",
        ranges=lambda p: {"tokens": CHARS_VOCAB, "next": CHARS_VOCAB},
    )
)


# --------------------------------------------------------------------------- karate


class KarateParams(SourceParams):
    per_class: int = Field(1, ge=1, le=4, description="labelled training nodes per class")
    seed: int | None = None


def _karate_fields(p: KarateParams) -> dict[str, TensorType]:
    return {
        "x": _t(34, 34),
        "edge_index": _t(2, 156, dtype="long"),
        "y": _t(34, dtype="long"),
        "train_mask": _t(34, dtype="bool"),
        "val_mask": _t(34, dtype="bool"),
        "test_mask": _t(34, dtype="bool"),
    }


def _karate_load(p: KarateParams, seed: int) -> Any:
    from dsl.data.loaders import load_karate

    return load_karate(p, seed)


register_source(
    Source(
        "karate",
        "graph",
        KarateParams,
        _karate_fields,
        _karate_load,
        doc="Zachary's karate club (PyG KarateClub): 34 nodes, 4 classes; `per_class` seeded "
        "labelled nodes per class form train_mask, a seeded half of the others val_mask, the rest test_mask",
        ranges=lambda p: {"y": 4},
    )
)


# --------------------------------------------------------------------------- sbm


class SBMParams(SourceParams):
    blocks: int = Field(4, ge=2, description="communities (classes)")
    size: int = Field(50, ge=2, description="nodes per community")
    p_in: float = Field(0.2, gt=0, le=1, description="edge probability inside a community")
    p_out: float = Field(0.02, ge=0, le=1, description="edge probability across communities")
    features: int = Field(16, gt=0, description="node feature width")
    noise: float = Field(2.0, ge=0, description="std of the Gaussian noise around each community's mean feature")
    per_class: int = Field(5, ge=1, description="labelled training nodes per community")
    seed: int | None = None


def _sbm_fields(p: SBMParams) -> dict[str, TensorType]:
    n = p.blocks * p.size
    return {
        "x": _t(n, p.features),
        "edge_index": _t(2, "E", dtype="long"),
        "y": _t(n, dtype="long"),
        "train_mask": _t(n, dtype="bool"),
        "val_mask": _t(n, dtype="bool"),
        "test_mask": _t(n, dtype="bool"),
    }


def _sbm_load(p: SBMParams, seed: int) -> Any:
    from dsl.data.loaders import load_sbm

    return load_sbm(p, seed)


register_source(
    Source(
        "sbm",
        "graph",
        SBMParams,
        _sbm_fields,
        _sbm_load,
        doc="a stochastic block model graph (Holland et al. 1983): undirected edges with p_in inside and "
        "p_out across communities, noisy community features; masks: per_class training nodes, "
        "the rest split half val, half test",
        ranges=lambda p: {"y": p.blocks},
    )
)


# --------------------------------------------------------------------------- dictionary lookup


class LookupParams(SourceParams):
    k: int = Field(10, ge=2, description="keys (and queries) per graph")
    graphs: int = Field(1000, gt=0, description="training graphs")
    eval_graphs: int = Field(200, gt=0, description="validation and test graphs each")
    batch: int = Field(32, gt=0, description="graphs per batch")
    seed: int | None = None


def _lookup_fields(p: LookupParams) -> dict[str, TensorType]:
    return {
        "x": _t("N", 2 * p.k),
        "edge_index": _t(2, "E", dtype="long"),
        "y": _t("N", dtype="long"),
        "mask": _t("N", dtype="bool"),
        "batch": _t("N", dtype="long"),
    }


def _lookup_load(p: LookupParams, seed: int) -> Any:
    from dsl.data.loaders import load_dictionary_lookup

    return load_dictionary_lookup(p, seed)


register_source(
    Source(
        "dictionary_lookup",
        "graphs",
        LookupParams,
        _lookup_fields,
        _lookup_load,
        doc="the DictionaryLookup task of Brody et al. 2022 (GATv2): a complete bipartite graph from k key "
        "nodes (one-hot key | one-hot value) to k query nodes (one-hot key | zeros); each query's label "
        "is the value of the key with the same name; `mask` marks query nodes",
    )
)


# --------------------------------------------------------------------------- MIL bags


class BagsParams(SourceParams):
    target: int = Field(9, ge=0, le=9, description="a bag is positive iff it holds this digit")
    mean: float = Field(10.0, gt=0, description="mean bag size")
    std: float = Field(2.0, ge=0, description="std of the bag size")
    bags: int = Field(200, gt=0, description="training bags")
    eval_bags: int = Field(100, gt=0, description="validation and test bags each")
    batch: int = Field(16, gt=0, description="bags per batch")
    seed: int | None = None


def _bags_fields(p: BagsParams) -> dict[str, TensorType]:
    return {
        "x": _t("B", "L", 64),
        "mask": _t("B", "L", dtype="bool"),
        "padding": _t("B", "L", dtype="bool"),
        "y": _t("B", dtype="long"),
    }


def _bags_load(p: BagsParams, seed: int) -> Any:
    from dsl.data.loaders import load_mil_bags

    return load_mil_bags(p, seed)


register_source(
    Source(
        "mil_bags",
        "bags",
        BagsParams,
        _bags_fields,
        _bags_load,
        doc="multiple-instance bags of 8x8 digits (after Ilse et al. 2018's MNIST-bags): sizes drawn "
        "from N(mean, std) (at least 1), label 1 iff the bag holds `target`; padded to the longest "
        "bag of the batch, `mask` marks real instances, `padding` the padded slots; train/val/test bags use disjoint images",
    )
)


# --------------------------------------------------------------------------- few-shot episodes


class EpisodeParams(SourceParams):
    ways: int = Field(5, ge=2, le=5, description="classes per episode")
    shots: int = Field(1, ge=1, description="labelled support examples per class")
    queries: int = Field(5, ge=1, description="query examples per class")
    episodes: int = Field(100, gt=0, description="training episodes per epoch")
    eval_episodes: int = Field(100, gt=0, description="validation and test episodes each")
    images: bool = Field(False, description="digits as 8x8 images [_, 1, 8, 8], standardised per channel")
    seed: int | None = None


def _episode_fields(p: EpisodeParams) -> dict[str, TensorType]:
    q, s = p.ways * p.queries, p.ways * p.shots
    item = (1, 8, 8) if p.images else (64,)
    return {
        "query": _t(q, *item),
        "support": _t(s, *item),
        "support_y": _t(s, dtype="long"),
        "y": _t(q, dtype="long"),
    }


def _episode_load(p: EpisodeParams, seed: int) -> Any:
    from dsl.data.loaders import load_episodes

    return load_episodes(p, seed)


register_source(
    Source(
        "episodes",
        "episodes",
        EpisodeParams,
        _episode_fields,
        _episode_load,
        doc="few-shot episodes from digits (Snell et al. 2017 protocol): training episodes draw from "
        "digits 0-4, validation and test episodes from digits 5-9 (disjoint halves of their images); "
        "labels are relabelled 0..ways-1 per episode",
    )
)


# --------------------------------------------------------------------------- files


class FileParams(SourceParams):
    path: str = Field(description="a .npz, .pt or .csv file")
    fields: list[str] | None = Field(None, description="the arrays or columns to use (default: all)")
    label: str = Field("y", description="csv: the label column, given as field `y`; other columns form `x`")
    batch: int = Field(64, gt=0)
    val: float = Field(0.2, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    standardize: bool = Field(False, description="scale float fields with the training split's statistics")
    seed: int | None = None
    base_dir: str = Field("", description="directory relative paths are resolved against (the spec's)")

    @field_validator("path")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if not v.endswith((".npz", ".pt", ".csv")):
            raise ValueError("data files must end in .npz, .pt or .csv")
        return v


def _file_fields(p: FileParams) -> dict[str, TensorType]:
    from dsl.data.files import file_fields

    return file_fields(p)


def _file_load(p: FileParams, seed: int) -> Any:
    from dsl.data.files import load_file

    return load_file(p, seed)


register_source(
    Source(
        "file",
        "table",
        FileParams,
        _file_fields,
        _file_load,
        doc="rows from a file: .npz arrays or .pt tensor dicts (first axis = rows; loaded with "
        "weights_only=True) or .csv (numeric columns -> x [B, F], the `label` column -> y [B] long)",
        positional=("path",),
    )
)


# --------------------------------------------------------------------------- graph lists


class GraphFileParams(SourceParams):
    path: str = Field(description="a .pt file holding a list of torch_geometric Data graphs")
    batch: int = Field(32, gt=0, description="graphs per batch")
    val: float = Field(0.2, ge=0, lt=1, description="fraction of graphs held out for validation")
    test: float = Field(0.2, gt=0, lt=1, description="fraction of graphs held out for testing")
    seed: int | None = Field(None, description="split seed (default: the train section's seed)")
    base_dir: str = Field("", description="directory relative paths are resolved against (the spec's)")

    @field_validator("path")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if not v.endswith(".pt"):
            raise ValueError("graphs() reads a .pt file (a list of torch_geometric Data)")
        return v


def _graph_file_fields(p: GraphFileParams) -> dict[str, TensorType] | None:
    from dsl.data.graphfiles import graph_fields

    return graph_fields(p)


def _graph_file_load(p: GraphFileParams, seed: int) -> Any:
    from dsl.data.graphfiles import load_graph_file

    return load_graph_file(p, seed)


register_source(
    Source(
        "graphs",
        "graphs",
        GraphFileParams,
        _graph_file_fields,
        _graph_file_load,
        doc="a list of PyG `Data` graphs saved with torch.save (loaded with weights_only=True), split "
        "60/20/20 by graph (stratified by a graph-level integer y) and batched as PyG does: x [N, F], "
        "edge_index [2, E] long, batch [N] long, y [G] or [N] (node- or graph-level), other tensor "
        "attributes by their level; fields are read from the file without torch for `dsl check`",
        positional=("path",),
    )
)
