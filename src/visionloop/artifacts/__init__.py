"""The files one stage hands to another, one module per hand-off: its file names, its reader
and its writer live there and nowhere else.

| module | hand-off | written by | read by |
|---|---|---|---|
| raw_store | shards/, manifest.csv, classes.json, drops.json | ingest | later stages |
| split_table | split.csv, state.json, audit.json, summary.json | split | prepare, lineage tags |
| prepared | <split>/{images,labels}.npy, sha256.txt; stats.json | prepare | train, evaluate, gate |
| bundle | model.json, weights.pt | train | evaluate, gate, registry |
| candidate | train.dir: model/, run.json, metrics.json, history.csv | train | evaluate, registry |
| evaluation | evaluate.dir: metrics, tables, predictions, candidate.json | evaluate | registry |
| verdict | gate.dir: verdict.json, verdict.md, summary.json | gate | registry, reports |
"""
