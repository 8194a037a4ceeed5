# Baseline for protonet_episodes.dsl: nearest-centroid on raw (standardised) pixels.
# ProtoNet with no encoder is exactly nearest-centroid (Snell et al. 2017, §2.5), so
# this model has no weights: it is evaluated, not trained (`python -m results`).
param shots = 1  # support examples per class: `--set shots=5` for 5-shot

model CentroidDigits(ways: int = 5) {
    input query: [Q, 64]
    input support: [S, 64]
    input support_y: [S] long
    logits = ProtoNet(query, support, support_y, ways=ways)
    output logits: [Q, ways]
}

train {
    data    = episodes(ways=5, shots=shots, queries=5)
    loss    = cross_entropy(logits, y)
    metrics = [accuracy(logits, y)]
    epochs  = 1
    seed    = 0
}
