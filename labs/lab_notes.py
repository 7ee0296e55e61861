"""The teaching text of each lab's page (docs/labs/NN-name.md): how the page's run is
launched, what to look at, and questions for students. The numbers, the verdict and the
plot on each page come from a run (`make_docs.py`), never from here.
"""

NOTES = {
    "01": {
        "page": "01-norm-axes", "ranks": 4, "args": [],
        "look": "Table 1: after BatchNorm every *feature* (column) has mean 0 and variance 1 while the "
                "per-sample rows do not; after LayerNorm the reverse. Table 2: in training mode BatchNorm's "
                "output for sample 0 moves when sample 1 changes, LayerNorm's never does, and in eval mode "
                "neither does. Table 3 (N > 1): plain BatchNorm under DDP drifts from the one-process "
                "global-batch model, SyncBatchNorm and LayerNorm stay at round-off.",
        "questions": [
            "Why is BatchNorm's per-feature variance slightly below 1 (look at the worst |var - 1|)? What does eps do?",
            "For the conv input, over which axes does BatchNorm2d average? How many values does each channel's mean use?",
            "Why does BatchNorm's output stop depending on batch-mates in eval mode?",
            "Under DDP, plain BatchNorm drifts but the replicas still agree with each other. Why?",
        ]},
    "02": {
        "page": "02-tiny-batch", "ranks": 2, "args": ["--budget", "1536", "--batches", "2,8,48"],
        "look": "Per row, compare BatchNorm with SyncBatchNorm (which equals BatchNorm on the global batch, "
                "column 'BN, 1 proc, global') and with LayerNorm, at the same number of samples seen. The "
                "verdict lists the (model, K, b) where the claim's prediction matched and where it did not.",
        "questions": [
            "With b = 2 samples per rank, what is a BatchNorm1d output for each feature, whatever the input?",
            "Why does the lab hold the number of samples seen equal instead of the number of steps?",
            "SyncBatchNorm's statistics cost the same bytes per step whatever b. Why?",
            "Where does the claim fail here? Is the rule 'b much larger than K' the right variable, or is it the "
            "global batch, or the number of values per channel (b x H x W for a CNN)?",
        ]},
    "03": {
        "page": "03-bn-placement", "ranks": 1, "args": [],
        "look": "For each activation, the final training loss and held-out accuracy of 'before', 'after' and "
                "'none', and the plot's curves. The claim needs 'after' to be no better than 'none'.",
        "questions": [
            "With a sigmoid, what does BN placed before the activation do to the sigmoid's input range?",
            "BN after a ReLU normalises non-negative values. What does the next Linear layer then see?",
            "Does training loss or held-out accuracy decide 'useless'? Do they agree here?",
            "Run with --depth 8. Does the ranking of the placements change?",
        ]},
    "04": {
        "page": "04-affine-fold", "ranks": 1, "args": [],
        "look": "The folding errors (float64, must be below 1e-12), the loss over the first tenth of the run for "
                "gamma=1, beta=0 against a random start, and the final loss without affine.",
        "questions": [
            "Write the folded Linear's weight and bias when gamma, beta feed W x + b. Why is it exact?",
            "Why can a ReLU between BN and the next Linear stop that Linear from absorbing beta?",
            "Folding BN into the previous Linear uses the running statistics. Why only at inference?",
            "What does starting at gamma = 1, beta = 0 mean for the function the network computes at step 0?",
        ]},
    "05": {
        "page": "05-deep-sigmoid", "ranks": 1, "args": [],
        "look": "The right panel: without BN the sigmoid net's gradient shrinks by orders of magnitude towards "
                "the input. The left panel and the speed-ups: how much sooner the BN nets reach the loss the "
                "plain nets end at.",
        "questions": [
            "The sigmoid's derivative is at most 1/4. What does that give over 8 layers?",
            "Why does the ReLU net without BN still lose gradient towards the input here? (Look at its init.)",
            "Is 'the gain with ReLU is doubtful' a statement about the architecture or about the initialisation?",
            "Change --lr. Does the verdict for ReLU change?",
        ]},
    "06": {
        "page": "06-dp-rank0", "ranks": 4, "args": [],
        "look": "The rank0/other column as N grows (1.00 at N = 2, N - 1 after), measured equal to stepcost "
                "to the byte; rank 0's peak memory against the others'; the projected traffic and time.",
        "questions": [
            "Why is rank 0 no bottleneck at N = 2?",
            "Rank 0's peak memory under dp grows by one gradient per rank. Where is that in the code (dp.py)?",
            "Under hub rank 0 moves the same bytes as under dp. What does hub change, then?",
            "At which N does ddp's modelled time fall below dp's for this small model, and why so late?",
        ]},
    "07": {
        "page": "07-dp-root-loss", "ranks": 4, "args": [],
        "look": "The output-gather and output-grad-scatter columns (dp-root only), rank 0's peak and its "
                "communication peak (from the memory report), and the modelled time ratio.",
        "questions": [
            "How many bytes do the gathered logits take for N ranks, b samples and C classes?",
            "Why does dp-root sum the gathered gradients where dp averages them?",
            "With --outputs 10 the extra memory disappears from the peak. Why? What dominates then?",
            "torch.nn.DataParallel does this within one machine. Why is it worse across machines?",
        ]},
    "08": {
        "page": "08-hub-vs-dp", "ranks": 4, "args": [],
        "look": "The param-bcast against grad-bcast columns (the same bytes), 'ranks updating' and the Adam "
                "state (dp: rank 0 only; hub: every rank), and the modelled time ratio dp / hub at every N.",
        "questions": [
            "Hub broadcasts gradients where dp broadcasts parameters: are these different bytes?",
            "Which uses more memory in total, dp or hub? Which on rank 0?",
            "What arithmetic does each charge for the reduction, and should they differ?",
            "What would have to change for hub to be 'much more efficient' than dp?",
        ]},
    "09": {
        "page": "09-ring-allreduce", "ranks": 5, "args": [],
        "look": "The schedule: in the reduce-scatter steps the partial sums grow by one rank per step; in the "
                "all-gather steps the complete sums travel. The bytes table: every rank sends 2(N-1)/N of "
                "the gradient's bytes, measured for N = 2..5 and predicted to 1,024.",
        "questions": [
            "After the reduce-scatter, which chunk is complete on rank r?",
            "Why does each rank send about 2x the gradient however large N gets?",
            "What grows with N in the ring, if not the bytes? (Count the messages.)",
            "Why are all ranks' results bit-identical even in float32?",
        ]},
    "10": {
        "page": "10-dp-vs-ddp-projection", "ranks": 1, "args": [],
        "look": "The crossover table: the N where dp becomes 2x and 10x slower than DDP per model and fabric, "
                "and the rank-0 bytes ratio at 1,024 ranks.",
        "questions": [
            "Why does the crossover hardly depend on the model size?",
            "Add --compute-ms 100. How do the crossovers move, and what does that say about 'obsolete'?",
            "On which fabric is dp least bad at 1,024 ranks, and why?",
            "When is dp still a reasonable choice?",
        ]},
}
