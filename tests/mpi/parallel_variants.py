"""The strategy variants tests/mpi/parallel_equivalence.py runs and
tests/test_parallel_equivalence.py checks: name -> (strategy, wrap options)."""

VARIANTS = {
    "dp": ("dp", {}),
    "dp-scatter": ("dp", {"scatter_inputs": True}),
    "dp-loss-on-root": ("dp", {"loss_on_root": True}),
    "dp-scatter-loss-on-root-binomial": ("dp", {"scatter_inputs": True, "loss_on_root": True,
                                                 "broadcast": "binomial"}),
    "hub": ("hub", {}),
    "hub-binomial": ("hub", {"reduce": "binomial", "broadcast": "binomial"}),
    "ddp-tiny-overlap": ("ddp", {"bucket_cap_mb": 1e-4, "overlap": True}),
    "ddp-tiny-no-overlap": ("ddp", {"bucket_cap_mb": 1e-4, "overlap": False}),
    "ddp-tiny-static-graph": ("ddp", {"bucket_cap_mb": 1e-4, "static_graph": True}),
    "ddp-large": ("ddp", {}),
    "ddp-large-no-overlap": ("ddp", {"overlap": False}),
    "ddp-ranks-average": ("ddp", {"bucket_cap_mb": 1e-3, "average": "ranks"}),
    "ddp-rabenseifner": ("ddp", {"bucket_cap_mb": 1e-3, "algorithm": "rabenseifner"}),
    "ddp-rabenseifner-static-graph": ("ddp", {"bucket_cap_mb": 1e-3, "algorithm": "rabenseifner",
                                              "static_graph": True}),
}
