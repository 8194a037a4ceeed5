"""The rows of the results table: which spec, which overrides, what to report."""

from __future__ import annotations

from dataclasses import dataclass

ACC = "accuracy"


@dataclass(frozen=True)
class Row:
    """One line of the table, run once per seed.

    ``mode`` is ``train`` (``dsl train``, then read the test split's numbers from
    ``meta.json``, taken once on the best validation epoch's weights) or
    ``eval`` (a model without weights, evaluated on the test split as built).
    ``extras`` name additional measurements (see ``results.measure``).
    """

    id: str
    group: str
    what: str
    spec: str
    sets: tuple[str, ...] = ()
    metric: str = ACC
    split: str = "test"
    mode: str = "train"
    extras: tuple[str, ...] = ()
    epochs: int | None = None  # --epochs override (None: the spec's own)


GATV2 = "GATv2 vs GAT on DictionaryLookup (k = 10)"
MIL = "HopfieldPooling vs mean and attention pooling on MIL digit bags"
FEWSHOT = "ProtoNet vs nearest-centroid on held-out digit classes (5-way)"
MOE = "MoE vs a dense MLP on digits"
PROTO = "PrototypeHead vs a linear head on digits"
KARATE = "Graph attention on karate()"
PROTOPNET = "ProtoPNet (patch prototypes, the paper's stages) vs the same backbone with a linear head, 8x8 digits"
LM = "Character language models on chars(): loss per character at equal steps, against the corpus's entropy"
PRUNE = "Gradual pruning: large-sparse vs small-dense at about equal non-zero weights"

#: ProtoPNet's stages with the joint stage's backbone learning rate raised and not decayed: the paper's
#: defaults (1e-4, divided by 10 every 5 epochs) fine-tune a pretrained backbone
SCRATCH_STAGES = ("stages=[warm(epochs=5), joint(epochs=20, push_every=10, backbone_lr=0.003, lr_step=0), "
                  "last_layer(epochs=5)]")

#: the same rates in the reference's alternation (main.py): each push is followed by last-layer training
ALTERNATING_STAGES = ("stages=[warm(epochs=5), joint(epochs=10, backbone_lr=0.003, lr_step=0), last_layer(epochs=5), "
                      "joint(epochs=5, backbone_lr=0.003, lr_step=0), last_layer(epochs=5)]")

ROWS: tuple[Row, ...] = (
    Row("gatv2-lookup", GATV2, "GATv2, 100 epochs", "specs/gatv2_lookup.dsl",
        extras=("train_acc",)),
    Row("gat-lookup", GATV2, "GAT, 100 epochs", "specs/gat_lookup.dsl",
        extras=("train_acc",)),
    Row("hopfield-mil", MIL, "HopfieldPooling (2 heads), 6,594 params", "specs/hopfield_mil.dsl"),
    Row("attention-mil", MIL, "attention pooling (Ilse et al.), 6,603 params", "specs/baselines/attention_mil.dsl"),
    Row("mean-mil", MIL, "mean pooling + MLP, 6,598 params", "specs/baselines/mean_mil.dsl"),
    Row("protonet-1shot", FEWSHOT, "ProtoNet, MLP encoder, 1-shot", "specs/protonet_episodes.dsl"),
    Row("centroid-1shot", FEWSHOT, "nearest centroid on raw pixels, 1-shot", "specs/baselines/centroid_episodes.dsl",
        mode="eval"),
    Row("protonet-5shot", FEWSHOT, "ProtoNet, MLP encoder, 5-shot", "specs/protonet_episodes.dsl",
        sets=("shots=5",)),
    Row("centroid-5shot", FEWSHOT, "nearest centroid on raw pixels, 5-shot", "specs/baselines/centroid_episodes.dsl",
        sets=("shots=5",), mode="eval"),
    Row("protonet-conv4-1shot", FEWSHOT, "ProtoNet, the paper's conv4 encoder, 1-shot", "specs/protonet_conv4.dsl"),
    Row("protonet-conv4-5shot", FEWSHOT, "ProtoNet, the paper's conv4 encoder, 5-shot", "specs/protonet_conv4.dsl",
        sets=("shots=5",)),
    Row("moe-balance", MOE, "MoE 8 experts, k = 2, balance loss 0.01", "specs/moe_digits.dsl",
        extras=("experts",)),
    Row("moe-nobalance", MOE, "MoE 8 experts, k = 2, no balance loss", "specs/moe_digits.dsl",
        sets=("balance=0",), extras=("experts",)),
    Row("dense-mlp", MOE, "dense MLP of the active size", "specs/baselines/dense_digits.dsl"),
    Row("linear-head", PROTO, "linear head", "specs/baselines/linear_digits.dsl"),
    Row("proto-head", PROTO, "PrototypeHead + ProtoPNet costs, no push", "specs/proto_digits.dsl"),
    Row("proto-push", PROTO, "PrototypeHead, push every 5 epochs", "specs/proto_push_digits.dsl",
        extras=("push",)),
    Row("protopnet-stages", PROTOPNET, "ProtoPNet as the spec writes it: 3 prototypes per class, the paper's stage learning rates "
        "(warm 5, joint 20 with a push every 10, last layer 5)",
        "specs/protopnet_digits.dsl", extras=("stages",)),
    Row("protopnet-scratch", PROTOPNET, "ProtoPNet, 10 prototypes per class (the paper's number), stage learning "
        "rates for a backbone trained from scratch (joint: backbone 3e-3, no decay)", "specs/protopnet_digits.dsl",
        sets=("per_class=10", SCRATCH_STAGES), extras=("stages",)),
    Row("protopnet-alternating", PROTOPNET, "ProtoPNet, the same rates and prototypes, stages alternated as the "
        "reference does (warm 5, joint 10 + push, last layer 5, joint 5 + push, last layer 5)",
        "specs/protopnet_digits.dsl", sets=("per_class=10", ALTERNATING_STAGES), extras=("stages",)),
    Row("conv-linear", PROTOPNET, "same conv backbone and add-on layers, linear head, 30 epochs",
        "specs/baselines/conv_linear_digits.dsl"),
    Row("switch-lm", LM, "Switch Transformer LM (8 experts, capacity 1.25), 20 epochs", "specs/switch_lm.dsl",
        metric="loss", extras=("entropy",), epochs=20),
    Row("dense-lm", LM, "the same LM with one dense MLP per layer (same FLOPs per token), 20 epochs",
        "specs/baselines/dense_lm.dsl", metric="loss", extras=("entropy",), epochs=20),
    Row("lstm-moe", LM, "LSTM-MoE (Shazeer et al.; 8 experts, k = 2), 40 epochs", "specs/lstm_moe.dsl",
        metric="loss", extras=("entropy",), epochs=40),
    Row("lstm-lm", LM, "the same two LSTMs without the MoE, 40 epochs", "specs/baselines/lstm_lm.dsl",
        metric="loss", extras=("entropy",), epochs=40),
    Row("prune-gat-large", PRUNE, "GAT, 4 heads x 32, pruned to 90% (karate)", "specs/prune_gat_karate.dsl",
        extras=("nonzero",)),
    Row("prune-gat-small", PRUNE, "GAT, 4 heads x 3, dense (karate)", "specs/prune_gat_karate.dsl",
        sets=("hidden=3", "sparsity=0"), extras=("nonzero",)),
    Row("prune-lstm-large", PRUNE, "LSTM LM, d = 128, pruned to 75% (chars; loss per character)",
        "specs/prune_lstm_chars.dsl", metric="loss", extras=("nonzero", "entropy")),
    Row("prune-lstm-small", PRUNE, "LSTM LM, d = 48, dense (chars; loss per character)",
        "specs/prune_lstm_chars.dsl", sets=("d=48", "sparsity=0"), metric="loss", extras=("nonzero", "entropy")),
    Row("protogat-karate", KARATE, "ProtoGAT (DESIGN §2), 200 epochs", "specs/protogat.dsl"),
    Row("gat-karate", KARATE, "2-layer GAT, 100 epochs", "specs/gat_karate.dsl"),
)


def select(only: str | None) -> list[Row]:
    """Rows whose id starts with one of the comma-separated ``only`` prefixes (all when None)."""
    if not only:
        return list(ROWS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    return [r for r in ROWS if any(r.id.startswith(w) for w in wanted)]
