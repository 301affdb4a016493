"""Watching what the model sees: drift, label issues, explanations, what to label next.

- `features`: the champion's penultimate-layer embeddings and probabilities, one pass.
- `drift`: MMD permutation test on embeddings + KS test on the maximum softmax.
- `labels`: cleanlab's label issues on a drop, and near-duplicate pairs with two labels.
- `intake`: both checks on a drop during ingest (warn or hold), and on the prediction log.
- `explain`: Grad-CAM overlays (captum) for any architecture of the zoo.
- `select`: the unlabelled images most worth labelling (uncertainty + k-center diversity).
"""
