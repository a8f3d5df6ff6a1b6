"""The parameters the two recipe estimators share, documented once.

:class:`~sktransfer.PretrainedImageClassifier` and
:class:`~sktransfer.PretrainedImageRegressor` take the same recipe
parameters; their docstrings are assembled from this text (numpydoc's
``Parameters`` entries) and each adds its own parameters and attributes.
"""

RECIPE_PARAMETERS = """
    backbone : str, default="resnet34"
        A torchvision classification model name (``"resnet34"``,
        ``"mobilenet_v2"``, ``"efficientnet_b0"``, ...) or ``"timm:NAME"``.
    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` (downloaded once into torch's cache), a torchvision
        weights name (``"IMAGENET1K_V1"``), the path of a local state_dict
        file, or None (random initialisation).
    image_size : int, default=None
        Side of the square network input. None uses the weights' preset.
    preprocessing : dict, default=None
        Overrides of the weights' preset (``resize_size``, ``crop_size``,
        ``mean``, ``std``, ``interpolation``, ``resize_mode``).
    hidden_sizes : tuple of int, default=()
        Sizes of the head's hidden layers; ``()`` for a linear head (the
        default: on the benchmarks' photo sets a linear head started by the
        probe is as accurate as fastai's head with a hidden layer of 512,
        and never collapses on a few images a class).
    dropout : float, default=0.5
        Dropout before the last Linear layer (half of it before the others).
    head_init : {"auto", "linear_probe", "random"}, default="auto"
        Where the head starts. ``"linear_probe"`` fits its output layer in
        closed form before any other stage: an L2-penalised logistic
        (softmax, or one sigmoid per label) or ridge regression on the
        standardised cached features of the training images, the penalty
        chosen by 3-fold cross-validation among 9 strengths. With a linear
        head (``hidden_sizes=()``) that is the linear model itself, so the
        stages after it fine-tune from where a linear model ends (linear
        probing, then fine-tuning). ``"random"`` starts from a random head.
        ``"auto"`` probes a linear head and starts a head with hidden layers
        at random.
    precompute_epochs : int, default=0
        Stage 1: epochs of the head on the frozen body's precomputed (cached)
        features, one cosine cycle, after the linear probe (if any). 0 skips
        the stage: the probe alone is the default (8 more epochs on top of
        it moved held-out accuracy and log loss only within noise on the
        benchmark sets; a random head needs them).
    augmented_cycles : int, default=0
        Stage 2: SGDR cycles of ``cycle_len`` epochs training the head on
        augmented photos through the frozen body. 0 skips the stage.
    augmented_copies : int, default=4
        Stage 2 trains on the cached features of this many fixed augmented
        copies of each photo (epoch ``e`` sees copy ``e % augmented_copies``;
        only the copies the epochs use are computed). Like the plain
        features, they are computed once and shared by every fold, grid
        candidate and refit. 0 augments afresh on every epoch instead,
        pushing every photo through the body each time.
    unfrozen_cycles : int, default=0
        Stage 3: SGDR cycles with the body unfrozen (the first ``cycle_len``
        epochs long, each next one ``cycle_mult`` times longer), at
        differential learning rates. 0 skips the stage.
    unfreeze_from : {0, 1, 2}, default=0
        First layer group trained in stage 3: 0 unfreezes the whole body, 1
        the middle and late groups, 2 only the late group.
    cycle_len : float, default=1
        Epochs of the first SGDR cycle of stages 2 and 3 (fractions allowed).
    cycle_mult : float, default=1
        Each cycle of stage 3 is ``cycle_mult`` times longer than the last.
    schedule : {"sgdr", "one_cycle"}, default="sgdr"
        The learning rate within each stage. ``"sgdr"``: cosine cycles with
        warm restarts, as above. ``"one_cycle"``: each stage's epochs (the
        same number) run as one cycle whose first quarter warms the rate up
        from 1/25 of its top (half a cosine) before it falls to 0, as
        fastai's ``fit_one_cycle``; it cannot make a snapshot ensemble. A
        stage of a few steps spends a quarter of them warming up (one of
        two steps runs at 1/25 of the rate).
    lr : float, "auto" or LRSweep, default=1e-3
        Learning rate of the head (AdamW) in stages 1 and 2. ``"auto"`` runs
        a learning-rate sweep of the head on cached features inside ``fit``;
        an :class:`~sktransfer.callbacks.LRSweep` sets that sweep's range
        and rule (``"auto"`` is ``LRSweep()``).
    unfrozen_lr : float, "auto", LRSweep or tuple of 3 floats, default=1e-4
        Stage 3 rate of the late layer group and the head; earlier groups
        get ``unfrozen_lr / lr_mult`` and ``unfrozen_lr / lr_mult**2``. A
        tuple gives the early, middle and late rates explicitly; ``"auto"``
        or an ``LRSweep`` sweeps it (all unfrozen groups together, at their
        ratios) when stage 3 starts.
    lr_mult : float, default=10
        Ratio between neighbouring layer groups' rates in stage 3.
    layer_decay : float or None, default=None
        Rates per block in stage 3 instead of per layer group (layer-wise
        rate decay, as BEiT's and ELECTRA's fine-tuning use): the body's
        last block trains at ``unfrozen_lr`` (the head too), and each block
        before it at ``layer_decay`` times the rate of the next (0.8 over
        mobilenet_v2's 19 blocks: the first at 1.8% of the top). ``lr_mult``
        is then not used; ``unfreeze_from`` still picks the trainable
        groups. ``history_``'s ``lrs`` then lists every block, then the
        head.
    augment : {"side_on", "top_down", "trivial"}, callable or None, default="side_on"
        Augmentation of training photos in stages 2 and 3; TTA views follow
        it. ``"side_on"``: flips, small rotations and zooms, a little
        lighting; ``"top_down"`` adds vertical flips and quarter turns;
        ``"trivial"``: ``"side_on"``'s geometry, then one TrivialAugment
        operation at a random strength (Müller & Hutter, 2021; wide space,
        as torchvision's ``TrivialAugmentWide``, drawn from the package's
        seeded generator). Corners a rotation uncovers show the photo's
        edge mirrored. A callable is your own augmentation, a torchvision
        transform for one: it gets each training photo as a PIL image and
        returns a PIL image, a uint8 array or a uint8 tensor; a result of
        the input size is used as it is, any other becomes the input the
        plain way. It draws from its own random source, so the fit is as
        reproducible as it is, and its copies are never cached; TTA views
        then follow ``"side_on"``. Use None when flips or rotations would
        change the target.
    max_zoom : float, default=1.1
        Largest random zoom of the augmentation.
    batch_size : int, default=64
        Mini-batch size of training, in every stage (at least 2: the head's
        BatchNorm needs it).
    weight_decay : float, default=1e-2
        Decoupled weight decay (AdamW).
    ema_decay : float, default=None
        Keep an exponential moving average of the weights in every gradient
        stage (1-3), updated after each step with this decay (lower in the
        first steps: ``min(ema_decay, (1 + n) / (10 + n))`` at update ``n +
        1``, as timm's model EMA), and use it: each epoch is validated with
        the averaged weights, early stopping keeps the best average, and the
        stage ends with the average (training goes on from the trained
        weights). About ``1 / (1 - ema_decay)`` steps are averaged: mind
        the steps a stage has (``n_images / batch_size`` an epoch). None
        averages nothing. Not with ``snapshot_ensemble``.
    tta : int, default=0
        Number of augmented views (mirror, zoomed and shifted crops) averaged
        with the plain view at prediction time.
    snapshot_ensemble : bool, default=False
        Keep the model at the end of every SGDR cycle of the last stage and
        average their predictions. Cheap when the last stage trains only the
        head (one feature pass, several heads); when the body was unfrozen,
        every snapshot runs its own body at prediction time.
    validation_fraction : float, default=None
        Hold out this fraction of the training data (stratified for
        single-label classes); its loss and score are recorded per epoch.
        None holds out nothing, unless ``early_stopping=True``, which then
        holds out 0.1 (as scikit-learn's ``MLPClassifier`` does). Validation
        images passed to ``fit`` as ``X_val``, ``y_val`` are used instead
        (giving both is an error).
    early_stopping : bool, default=False
        Stop a stage after ``n_iter_no_change`` epochs without improvement
        of the validation loss by at least ``tol``, and keep its best
        weights; and undo a whole stage whose best validation loss is not
        lower (by ``tol``) than that of the model it started from, so that
        the fit ends with the best stage end: never worse on the validation
        images than the linear probe, when fine-tuning does not pay. The
        validation set is ``fit``'s ``X_val``, or else
        ``validation_fraction`` of the training data (0.1 when that is
        None). ``history_`` marks the epochs undone (``discarded``). When
        every stage after the probe is undone and the validation images
        came from the training data, the probe is fitted again on all of
        them (a ``"refit"`` record in ``history_``): the model is then the
        one the probe alone gives, without early stopping (not with
        ``threshold="tuned"``, which chooses its thresholds on them).
    n_iter_no_change : int, default=3
        With ``early_stopping``: how many epochs in a row a stage may go
        without lowering its best validation loss by at least ``tol``
        before it stops (the stage runs at least ``1 + n_iter_no_change``
        epochs, or all of its epochs if fewer).
    tol : float, default=1e-4
        With ``early_stopping``: the smallest decrease of the validation
        loss that counts as an improvement (absolute, as in scikit-learn's
        ``MLPClassifier``).
    warm_start : bool, default=False
        A new ``fit`` continues from the current head and body weights (the
        linear probe, which starts a new head, is skipped).
    callbacks : list of skorch callbacks, default=None
        skorch callbacks (instances, or ``(name, callback)`` pairs) added to
        the net of every skorch-trained stage, after sktransfer's own: e.g.
        ``ProgressBar``, ``EpochScoring``, ``Checkpoint``, ``TensorBoard``
        or a ``Callback`` subclass of your own. Each stage trains its own
        skorch net and gets fresh deep copies of them, so nothing carries
        over from stage to stage or from fit to fit (the instances given
        are never called; one that cannot be deep-copied, holding an open
        writer, is copied shallowly and shares what it holds); a callback
        sees ``net.history`` of its stage only. The linear probe is fitted
        in closed form, without a net, so callbacks do not see it. A
        stage's net works on the head's raw outputs (logits, or
        standardised targets) and its data sets yield ``(target, weight)``
        pairs as ``y``: an ``EpochScoring`` needs a scoring function of its
        own rather than a scikit-learn scorer name. Numbers a callback
        records in an epoch's ``net.history`` row (an ``EpochScoring``'s
        score) are copied into that epoch's ``history_`` record. A skorch
        ``EarlyStopping`` among them ends the stage as ``early_stopping``
        does, and the fit goes on.
    checkpoint_dir : str or path-like, default=None
        A folder where the fit writes its state after every stage and after
        every epoch of a stage that runs the body on images (weights,
        optimizer, schedule, early stopping, the callbacks' states, the
        random state). After an interruption (Ctrl-C, a crash, a machine
        that went away), calling ``fit`` again with the same parameters and
        data goes on from the last epoch written and ends with the model an
        uninterrupted fit would have. The file is named by a digest of the
        parameters (but ``verbose``, ``callbacks`` and ``cache``), the
        images' contents, targets and weights, so a different fit never
        reads it; it is removed when the fit succeeds. Checkpoint files are
        pickles: resume only from a folder you trust. A ``callbacks`` entry
        that cannot be pickled leaves checkpoints between stages only (with
        a warning). Not saved with the model.
    on_error : {"raise", "skip"}, default="raise"
        What ``fit`` does with images that cannot be read or decoded:
        ``"raise"`` lists them all in one error before training; ``"skip"``
        leaves them out, warns, and lists them in ``skipped_``.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Numeric precision of the network's matrix work, in feature
        extraction and in every training stage (autocast; weights,
        optimizer state and losses stay fp32). ``"auto"`` uses bf16 where
        the hardware runs it natively (AVX-512 BF16/AMX CPUs, GPUs with
        bf16 tensor cores: Ampere and later), fp16 on CUDA GPUs with fp16
        tensor cores but no native bf16 (T4, V100, where torch only
        emulates bf16), fp32 elsewhere. fp16 training scales the loss
        (``torch.amp.GradScaler``): gradients reach callbacks unscaled, and
        a step whose gradients overflowed is skipped. ``"fp16"`` can be
        asked for on a CPU too, where it is slow unless the CPU has fp16
        matrix units.
    extract_batch_size : int, default=32
        Images per forward pass of the body when computing features.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, then Apple's MPS, else the CPU),
        ``"cpu"``, ``"cuda"``, ``"mps"``...
    cache : "auto", path or None, default="auto"
        Feature cache directory. ``"auto"`` is ``$SKTRANSFER_CACHE`` or the
        per-user cache folder; None disables it.
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, shuffling and augmentation. Global
        RNG state is left untouched.
    verbose : int, default=0
        1 shows a progress bar per stage and one summary line per fit; 2
        adds one line per epoch (stage, rates, losses).
"""
