"""The ONNX Runtime backend: int8 towers made once per model and machine, run without torch.

Why there are two graph sources, and not the library exporter alone (issue 21, measured
with ``python -m bench.export_routes --reps 3`` and ``--speed-only --speed-reps 9`` on
ViT-B-32 and the CLIP text tower, 2 cores, medians; figures in bench/README.md):

================  =========  ==========  ===========================  ===================
route             export s   peak PSS    int8 image graph, CPU time   int8 text, CPU/text
================  =========  ==========  ===========================  ===================
written (here)    7.1        490 MB      1                            1
torch.onnx +      58.0       1,861 MB    0.951x as fast               1.35x the CPU
quantize_dynamic
(unpatched)
================  =========  ==========  ===========================  ===================

The issue's rule was: if the library route's graph is as fast (within 5 %) and its first
run fits the first-run goal, delete the writer and the quantiser patch. It is not: its
image graph is at the 5 % line on CPU time and 0.90-0.98x on wall time (the TorchScript
graph keeps shape arithmetic for its dynamic batch: 933 nodes after ONNX Runtime's
optimisation against 272, and its last block computes every token, not the pooled one),
its text graphs are fixed-length (16 or 77 tokens) where the writer's take each query at
its own length, and its export costs 8x the seconds and 3.8x the memory of a first run.
dynamo=True was slower still (83.7 s, 0.848x). Agreement with fp32 torch is the same for
every route (image cosine min 0.99983, top-10 kept 0.996).

So ``onnx_graphs.py`` writes the two towers it knows (open_clip's ViT and CLIP text tower,
which are the image tower of the default profile and both towers of clip-b32-en), and every
other tower (XLM-R, SigLIP, NLLB) goes through ``torch.onnx.export`` in ``onnx_export.py``
/ ``hf_text_export.py``. Both quantise with ONNX Runtime's ``quantize_dynamic``; the traced
route swaps in ``per_channel.py``'s vectorised per-channel step, which writes byte-identical
graphs (the traced and library graphs hash the same, and
``test_the_vectorised_per_channel_step_writes_onnx_runtime_s_graph_byte_for_byte`` fails on
an ONNX Runtime release that changes the step) and saves 7.4 s per image tower, 9.5 s per
CLIP text tower and 29 s on XLM-R (73.5 s against 102.6 s).
"""
