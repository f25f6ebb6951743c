"""Running meshing: the one run lifecycle every executor shares.

``lifecycle`` (begin, setup, plan, batches, layer summary, finish/end, and ``run``'s driver),
``chunk`` (the chunk unit: mesh or stitch, publish, record one chunk), ``layer`` (the local
process-pool executor and ``run_batch``), ``checks`` (input checks before any chunk),
``plan`` (batch descriptors), ``records`` (chunk records and the run journal), ``lease`` (the
mesh dir's lock), ``setup`` and ``metadata`` (what the procedure edits by hand), ``status``.
"""
