#!/usr/bin/env bash
# The study behind D3's default preset (BENCHMARKS.md "A default that purifies any model"):
# eight backdoored Fashion-MNIST models of five architectures, each with its clean reference
# (the ASR floor), then every candidate defense on a 3,000-image retain set.
#   bash benchmarks/d3_default_study.sh models     # train the eight models (about 25 min, 2 cores)
#   bash benchmarks/d3_default_study.sh explore    # the one-factor-at-a-time study on the dev part
#   bash benchmarks/d3_default_study.sh final      # default vs the faithful presets and baselines, all eight
#   bash benchmarks/d3_default_study.sh retain     # the default with 500 and 1,000 retain images
#   bash benchmarks/d3_default_study.sh seed1      # default and faithful presets, another retain seed
#   bash benchmarks/d3_default_study.sh lmd        # lambda 5 and 3 with the default, dev part, seeds 0 and 1
#   bash benchmarks/d3_default_study.sh screen     # second round on the dev part: augmentation, eps, a loss-tracking
#                                                  # lambda, angle weighting, D3 seeds; what costs accuracy at 500 images
#   bash benchmarks/d3_default_study.sh distill    # third round: the suspect's own clean outputs as a soft target
#   bash benchmarks/d3_default_study.sh stem       # third round: the distance over every layer but the stem
#   bash benchmarks/d3_default_study.sh bias       # third round: the warm start also zeroes the classifier's bias
#   bash benchmarks/d3_default_study.sh small      # third round: 500 images with augmentation / more epochs
#   bash benchmarks/d3_default_study.sh blend [dev|check] [SEED ...]
#                                                  # fourth round: the overlay augmentation (blend 0.3), dev at
#                                                  # seeds 0-2, check at seeds 0-1 (one process per seed: run
#                                                  # `blend check 0` and `blend check 1` side by side)
#   bash benchmarks/d3_default_study.sh baselines [dev|check] [SEED ...]
#                                                  # fourth round: the faithful presets and FT-SAM on the same cells
#   bash benchmarks/d3_default_study.sh reference-blend [dev|check] [SEED ...]
#                                                  # fourth round: the reference preset with the overlay
#   bash benchmarks/d3_default_study.sh retain-blend # fourth round: the default with and without blend, 500 and 1,000 images
#   bash benchmarks/d3_default_study.sh tail       # fourth round: plain fine-tuning after D3; D3 for half the epochs
#   bash benchmarks/d3_default_study.sh curves     # fourth round: the default's per-epoch test curves, VGG Blended
#   bash benchmarks/d3_default_study.sh fifth      # fifth round: what the overlay costs the ViT, and what wins it back
#   bash benchmarks/d3_default_study.sh demo       # fifth round: the README demo's D3 with some of those candidates
#   bash benchmarks/d3_default_study.sh sau [RUN_DIR ...] # SAU on the study models (seed 0), for the
#                                                  # per-architecture bar (one process per call: split the runs)
#   bash benchmarks/d3_default_study.sh norm-models [cnn|vit] # sixth round: three models without BatchNorm (a
#                                                  # CNN with none, one with GroupNorm, a second ViT); cnn and vit
#                                                  # can run side by side
#   bash benchmarks/d3_default_study.sh sixth [SEED ...] # sixth round: the default and the faithful presets
#                                                  # on those three, seeds 0-2 (one process per seed)
#   bash benchmarks/d3_default_study.sh plain      # sixth round: more epochs or a larger lr on the plain CNN
#   bash benchmarks/d3_default_study.sh lr [SEED ...] # sixth round: the default at learning rates 0.02 and 0.03,
#                                                  # dev part and the plain CNN, seeds 0-1 (stopped there: the VGG
#                                                  # Blended fails at 0.03), one process per seed
#   bash benchmarks/d3_default_study.sh sixth-retain # sixth round: default, paper and classifier-only with 500 and
#                                                  # 1,000 images on the four models without BatchNorm
#   bash benchmarks/d3_default_study.sh sixth-check # sixth round: the same candidates once on a check model without
#                                                  # BatchNorm (a plain CNN, BadNets, augmented training)
#   bash benchmarks/d3_default_study.sh nobn-lr [SEED ...] # sixth round: on the models without BatchNorm, the
#                                                  # classifier-only distance at lr 0.02 / 0.03 or 24 epochs
#   bash benchmarks/d3_default_study.sh shipped [SEED ...] # sixth round: the default as shipped (its BatchNorm
#                                                  # rule on) on every cell, one process per seed
#   bash benchmarks/d3_default_study.sh shipped-retain # sixth round: the same with 500 and 1,000 images (seed 0)
#   bash benchmarks/d3_default_study.sh small-epochs [36|72] # sixth round: 500 images, 3x / 6x the epochs
#   bash benchmarks/d3_default_study.sh seventh [500|1000] [SEED ...] # seventh round: the steps floor (the
#                                                  # default's min_steps 600) against the default without it,
#                                                  # every model, seeds 0-1 (one process per retain size; the
#                                                  # round then added `seventh 500 2` and `seventh 1000 2`)
#   bash benchmarks/d3_default_study.sh demo-floor # seventh round: the README demo's D3 with the floor's epochs
#   bash benchmarks/d3_default_study.sh new-models # seventh round: three check models of architectures the study
#                                                  # never had (ShuffleNetV2 Blended, MobileNetV3 LF, RegNet
#                                                  # BadNets), trained after the steps floor was chosen
#   bash benchmarks/d3_default_study.sh seventh-check # seventh round: once on those three: the default with and
#                                                  # without the floor at 500 and 1,000 images; the default, the
#                                                  # faithful presets and FT-SAM at 3,000 (seed 0; D3 also
#                                                  # at seed 1)
#   bash benchmarks/d3_default_study.sh seventh-diagnose # seventh round: the MobileNetV3 LF's curves, stronger variants
#   bash benchmarks/d3_default_study.sh conv-models [blended|plain] # eighth round: two small CNNs whose classifier is
#                                                  # a 1x1 convolution (no nn.Linear), with and without BatchNorm
#   bash benchmarks/d3_default_study.sh eighth [SEED ...] # eighth round: on those two, the default (which leaves a conv
#                                                  # head where it is) against turning the head as it turns a Linear
#                                                  # classifier, the faithful presets and FT-SAM (a process per seed)
#   bash benchmarks/d3_default_study.sh conv-check [sig|lf] # eighth round, after the default's handling of conv heads
#                                                  # was chosen: two more conv-head models without normalisation
#                                                  # (SIG, LF), trained and run once (`conv-check sig` and
#                                                  # `conv-check lf` train side by side; `conv-check` then runs both)
#   bash benchmarks/d3_default_study.sh mlp-models [plain|bn] # eighth round: two check models with no convolution at
#                                                  # all (a small MLP without and with BatchNorm1d)
#   bash benchmarks/d3_default_study.sh mlp         # eighth round, once: the default, the faithful presets and FT-SAM
#                                                  # on the two MLPs (3,000 images; the default also with 500 and
#                                                  # 1,000 and at a second retain draw)
#   bash benchmarks/d3_default_study.sh mlp-explore # eighth round, after `mlp` (the default failed there): what removes
#                                                  # the MLPs' backdoors (λ, the overlay, the layers), retain seeds 0-2;
#                                                  # the two MLPs are development models from here on
#   bash benchmarks/d3_default_study.sh mlp-check   # eighth round: two more MLPs, trained after `mlp-explore`, and the
#                                                  # default and the faithful presets on them once (no candidate was
#                                                  # chosen: the check tells whether the MLP failure is general)
#   bash benchmarks/d3_default_study.sh mlp-rule    # eighth round: candidate rules for models without convolution on
#                                                  # all four MLPs (all seen by now), retain seeds 0-2
#   bash benchmarks/d3_default_study.sh mlp-rule-check # eighth round: three more MLPs, trained after `mlp-rule`, and
#                                                  # the default against the reference's values, then the runner-up
#                                                  # (λ 0.5 on the classifier at lr 0.03), each once
#   bash benchmarks/d3_default_study.sh bnfed [SEED ...] # eighth round: the distance over the BatchNorm-fed weights and
#                                                  # the classifier (`layers: batchnorm-fed`) on the three BatchNorm
#                                                  # models where that is not every weight (MobileNetV3, RegNetY,
#                                                  # PreAct-ResNet18), 500 and 3,000 images, with the default's
#                                                  # missing cells there (one process per seed)
#   bash benchmarks/d3_default_study.sh ninth       # ninth round: input pruning on the seven MLPs (seeds 0-2; 500, 1,000)
#   bash benchmarks/d3_default_study.sh ninth-diagnose # ninth round: why the MLPs keep BadNets (weights turned, pixels lit)
#   bash benchmarks/d3_default_study.sh ninth-alone # ninth round: input pruning alone, without D3, on all eleven MLPs
#   bash benchmarks/d3_default_study.sh lenet-models [blended] # ninth round: two LeNet-5s with BadNets (without and with
#                                                  # BatchNorm); `blended`: two more with Blended
#   bash benchmarks/d3_default_study.sh lenet-blended # ninth round, once: the default and the baselines on the Blended LeNets
#   bash benchmarks/d3_default_study.sh lenet       # ninth round, once: the default and the baselines on the two LeNets
#   bash benchmarks/d3_default_study.sh lenet-explore # ninth round: the distance's layers, the overlay, the lr on them
#   bash benchmarks/d3_default_study.sh ninth-light # ninth round: a lighter D3 (paper's, or no overlay) after the pruning
#   bash benchmarks/d3_default_study.sh ninth-tolerance # ninth round: the pruning at other tolerances
#   bash benchmarks/d3_default_study.sh ninth-models # ninth round: four check MLPs trained after it was chosen
#   bash benchmarks/d3_default_study.sh ninth-check # ninth round, once: on those, with and without it, and the baselines
#   bash benchmarks/d3_default_study.sh tenth-models # tenth round: the PyTorch-example CNN (dropout, log-softmax) with BadNets, Blended
#   bash benchmarks/d3_default_study.sh tenth-models sig|a2a; ... tenth-sig|tenth-a2a 0 1 2 # tenth round, once: SIG, all-to-all
#   bash benchmarks/d3_default_study.sh tenth 0 1 2 # tenth round, once: the default and the faithful presets on them
#   bash benchmarks/d3_default_study.sh tenth-lr dev|check SEEDS # tenth round: the classifier's own lr without BatchNorm
#   bash benchmarks/d3_default_study.sh tenth-bn dev|check SEEDS # tenth round: BatchNorm statistics re-estimated after D3
#   bash benchmarks/d3_default_study.sh tenth-sizes # tenth round, once: the default with 500 and 1,000 images
#   bash benchmarks/d3_default_study.sh eleventh dev|check|500 SEEDS # eleventh round: the classifier restarted from the
#                                                  # retain set's class means (`init: means`) against the random start
#   bash benchmarks/d3_default_study.sh eleventh-orth SEEDS # eleventh round: that start at right angles to the suspect's
#   bash benchmarks/d3_default_study.sh eleventh-warmup dev|check SEEDS # eleventh round: the restarted classifier
#                                                  # trained alone for two epochs first (`head_warmup: 2`)
#   bash benchmarks/d3_default_study.sh eleventh-demo # eleventh round: the README demo with that start
#   bash benchmarks/d3_default_study.sh eleventh-why RUN_DIR... # eleventh round: suspect classifier against class means
#   bash benchmarks/d3_default_study.sh twelfth-models [a|b] # twelfth round: three check models trained with
#                                                  # recipes the study never had (other targets, lower poison
#                                                  # rates, MobileNetV3-Large and MobileNetV2); a and b side by side
#   bash benchmarks/d3_default_study.sh twelfth [3000|500|1000] # twelfth round, once on those three
#   bash benchmarks/d3_default_study.sh twelfth-diagnose # twelfth round, after it: what costs the MobileNetV2 accuracy; 24 epochs
#   bash benchmarks/d3_default_study.sh twelfth-where dev|check # twelfth round, after it: the classifier-only distance
#                                                  # (`paper`) on the BatchNorm study models
#   bash benchmarks/d3_default_study.sh thirteenth-uap OUT.jsonl RUN_DIR... # thirteenth round: universal perturbations
#                                                  # fitted on the suspect, transferred to the `paper` result
#   bash benchmarks/d3_default_study.sh thirteenth-refit OUT.jsonl RUN_DIR... # thirteenth round: the best linear classifier
#                                                  # on the default's and the suspect's features
#   bash benchmarks/d3_default_study.sh thirteenth-depth SEEDS # thirteenth round: the distance over half the layers
#   bash benchmarks/d3_default_study.sh fourteenth-models [a|b] # fourteenth round: two more check models (MnasNet LF,
#                                                  # VGG19-BN WaNet)
#   bash benchmarks/d3_default_study.sh fourteenth # fourteenth round, once on those two
#   bash benchmarks/d3_default_study.sh fifteenth-sam SEEDS # fifteenth round: sharpness-aware steps in D3
#   bash benchmarks/d3_default_study.sh fifteenth-fisher SEEDS # fifteenth round: a Fisher-weighted distance
#   bash benchmarks/d3_default_study.sh fifteenth-models [a|b] # fifteenth round: two check models (MnasNet-0.5
#                                                  # BadNets, GoogLeNet Blended); a and b side by side
#   bash benchmarks/d3_default_study.sh fifteenth RUN_DIR... # fifteenth round, once on them
#   bash benchmarks/d3_default_study.sh sixteenth-models [a|b|c|d|e|f] # sixteenth round: check models trained with
#                                                  # other recipes (label smoothing, Adam, no weight decay, long, to fit)
#   bash benchmarks/d3_default_study.sh sixteenth RUN_DIR... # sixteenth round, once on each recipe model
#   bash benchmarks/d3_default_study.sh sixteenth-sets [a|b] # sixteenth round: logits at their retain temperature on
#                                                  # the earlier rounds' models
#   bash benchmarks/d3_default_study.sh seventeenth-models [a|b|c|d|e|f|g|h] # seventeenth round: hybrid-ViT check
#                                                  # models (a-d), MLPs, LeNet-5s and a plain CNN (e-h)
#   bash benchmarks/d3_default_study.sh seventeenth RUN_DIR... # seventeenth round, once on them
#   bash benchmarks/d3_default_study.sh seventeenth-sizes RUN_DIR... # seventeenth round: 500 images (seed 1), 1,000
#   bash benchmarks/d3_default_study.sh seventeenth-diagnose RUN_DIR... # seventeenth round: steps or images?
#   bash benchmarks/d3_default_study.sh seventeenth-floor SEEDS # seventeenth round: a steps floor of 1,128
#   bash benchmarks/d3_default_study.sh seventeenth-floor-check # seventeenth round: the same on the check models
#                                                  # without BatchNorm
#   bash benchmarks/d3_default_study.sh seventeenth-floor-late SEED # seventeenth round: the floors on those two
#   bash benchmarks/d3_default_study.sh seventeenth-late RUN_DIR... # seventeenth round: those six at 3,000 images
#   bash benchmarks/d3_default_study.sh seventeenth-average SEEDS # seventeenth round: the mean of the last steps'
#                                                  # weights (stochastic weight averaging)
#   bash benchmarks/d3_default_study.sh fifteenth-probes clp|uap|rescale|angles|momentum|logits|temperature RUN_DIR...
#                                                  # fifteenth round: probes (benchmarks/d3_probes.py) on the study
#                                                  # models (logits, temperature: the sixteenth round's)
#   bash benchmarks/d3_default_study.sh nineteenth-user-models a|b|c|d # nineteenth round: models as a user brings
#                                                  # them (benchmarks/user_models.py, $USER_RUNS: runs/user)
#   bash benchmarks/d3_default_study.sh nineteenth-user MODEL... # nineteenth round: `distox.purify` on them; also
#                                                  # nineteenth-user-shipped, nineteenth-user-explore,
#                                                  # nineteenth-candidates, nineteenth-user-swapped, nineteenth-table
#   bash benchmarks/d3_default_study.sh twentieth-eps  # twentieth round: ε from the suspect's own retain loss
#   bash benchmarks/d3_default_study.sh twentieth-twice a|b # twentieth round: the default run twice (purifying the
#                                                  # purified model), study and user models; twentieth-table
#   bash benchmarks/d3_default_study.sh twentieth-depth a|b # twentieth round: `reference` after the default, and after
#                                                  # the default with the all-layer distance on models without BatchNorm
#   bash benchmarks/d3_default_study.sh twentieth-resnet # twentieth round: BatchNorm options on the user ResNet-18
#   bash benchmarks/d3_default_study.sh twentieth-augment # twentieth round: crop augmentation on the dev part
#   bash benchmarks/d3_default_study.sh twentieth-angles # twentieth round: the degrees the default turns user models' weights
#   bash benchmarks/d3_default_study.sh twentieth-norm-lr a|b # twentieth round: a learning rate that follows the weights' size
#   bash benchmarks/d3_default_study.sh twentieth-size a|b # twentieth round: a distance weight per weight by its size
#   bash benchmarks/d3_default_study.sh twenty-first-size-median a|b # twenty-first round: the size weight capped
#                                                  # at the model's median norm
#   bash benchmarks/d3_default_study.sh twenty-first-models a|b # twenty-first round: two user check models
#   bash benchmarks/d3_default_study.sh twenty-first-check MODEL... # twenty-first round, once on each check model
#   bash benchmarks/d3_default_study.sh twenty-first-diagnose # twenty-first round: the MobileNetV3-Small's cost
#   bash benchmarks/d3_default_study.sh twenty-first-800 # twenty-first round: 800 images on the user ResNet-18
#   bash benchmarks/d3_default_study.sh twenty-second-universal a|b # twenty-second round: the bound under a shared
#                                                  # perturbation
#   bash benchmarks/d3_default_study.sh twenty-second-more a|b # twenty-second round: radius 0.1 on more models
#   bash benchmarks/d3_default_study.sh twenty-second-classifier # twenty-second round: classifier-only with it
#   bash benchmarks/d3_default_study.sh twenty-second-seed1 a|b # twenty-second round: a second retain draw
#   bash benchmarks/d3_default_study.sh twenty-third-shared a|b # twenty-third round: the bound on shared adversarial
#                                                  # copies of each batch (SAU's, per image)
#   bash benchmarks/d3_default_study.sh twenty-third-more a|b # twenty-third round: a second draw, radius 0.03
#   bash benchmarks/d3_default_study.sh twenty-third-lite a|b # twenty-third round: cheaper copies
#   bash benchmarks/d3_default_study.sh twenty-fourth-once a|b # twenty-fourth round: the shared copies crafted once,
#                                                  # against the suspect, before any weight moves
#   bash benchmarks/d3_default_study.sh twenty-fourth-radius a|b # twenty-fourth round, after twenty-fourth-once: radius
#                                                  # 0.03 and 0.02
#   bash benchmarks/d3_default_study.sh twenty-fourth-rest a|b # twenty-fourth round, last: radius 0.03 on the other cells
#   bash benchmarks/d3_default_study.sh twenty-fourth-more a|b # twenty-fourth round, after it: radius 0.03 at a second
#                                                  # draw (a), copies for half of each batch (b)
#   bash benchmarks/d3_default_study.sh twenty-fourth-half a|b # twenty-fourth round, last: `o03-half` on the other cells
#   bash benchmarks/d3_default_study.sh twenty-fourth-third a|b # twenty-fourth round, last: a third draw of the two
#                                                  # hardest cells, the default and `o03`
#   bash benchmarks/d3_default_study.sh twenty-fifth-lighter a|b # twenty-fifth round: `o03` with a lighter distance (on
#                                                  # the final classifier alone, or at λ 5): study models (a), user models (b)
#   bash benchmarks/d3_default_study.sh twenty-fifth-head a|b # twenty-fifth round: `o03-head` at more retain draws
#   bash benchmarks/d3_default_study.sh twenty-fifth-check a|b # twenty-fifth round: the default and `o03-head` once on
#                                                  # check models of earlier rounds (trained here first)
#   bash benchmarks/d3_default_study.sh twenty-fifth-small # twenty-fifth round: the default and `o03-head` with few
#                                                  # clean images (500 on study models, 800 on user models)
#   bash benchmarks/d3_default_study.sh twenty-fifth-der a|b # twenty-fifth round, last: the faithful presets and FT-SAM
#                                                  # beside the new default on the small study and check models (seed 0)
#   bash benchmarks/d3_default_study.sh twenty-sixth-check a|b [SEED] # twenty-sixth round: the default and `all-layers`
#                                                  # once on earlier rounds' models the default never ran on (a: without
#                                                  # BatchNorm — MLPs, LeNet-5s, tutorial and plain CNNs; b: ViTs,
#                                                  # ShuffleNetV2, hybrid ViTs, VGG19-BN), trained here first
#   bash benchmarks/d3_default_study.sh twenty-sixth-small [SEED [IMAGES]] # twenty-sixth round: the same check models
#                                                  # with 500 (or IMAGES) clean images, the default and `all-layers`
#   bash benchmarks/d3_default_study.sh twenty-sixth-half-check # twenty-sixth round: `half` once on the check models
#   bash benchmarks/d3_default_study.sh twenty-sixth-der a|b # twenty-sixth round, last: the faithful presets and FT-SAM
#                                                  # on the same check models (seed 0), for DER per architecture
#   bash benchmarks/d3_default_study.sh twenty-sixth-hybrid # twenty-sixth round: what removes the BadNets backdoor
#                                                  # of the hybrid ViT check model that the default left (a diagnosis)
#   bash benchmarks/d3_default_study.sh twenty-sixth-half a|b # twenty-sixth round: the default with copies for half
#                                                  # of each batch (under 2 x plain fine-tuning's time), study models
#                                                  # (a) and user models (b), seed 0
#   bash benchmarks/d3_default_study.sh twenty-seventh-dev [SEED [IMAGES]] # twenty-seventh round: on the models
#                                                  # without BatchNorm of the twenty-sixth round, the copies with the
#                                                  # restarted classifier's rate kept apart from the rest's
#   bash benchmarks/d3_default_study.sh twenty-seventh-overlay a|b|c # twenty-seventh round: the default without its
#                                                  # overlay augmentation (the copies alone), development models
#   bash benchmarks/d3_default_study.sh twenty-seventh-models a|b # twenty-seventh round: check models without
#                                                  # BatchNorm, trained here first (earlier rounds' commands)
#   bash benchmarks/d3_default_study.sh twenty-seventh-check a|b [SEED [IMAGES]] # twenty-seventh round: the default
#                                                  # and `no-overlay` once on them
#   bash benchmarks/d3_default_study.sh twenty-seventh-bn-check [SEED] # twenty-seventh round: `no-overlay` once on
#                                                  # the check models with BatchNorm of the two rounds before
#   bash benchmarks/d3_default_study.sh twenty-seventh-small # twenty-seventh round: `no-overlay` with 500 clean
#                                                  # images on the models with BatchNorm of the two rounds before
#   bash benchmarks/d3_default_study.sh twenty-eighth-dev eps-auto|lmd30|ft|where|warmup|head-first [SEED [IMAGES]] # twenty-eighth
#                                                  # round: on the development models without BatchNorm, the hinge's
#                                                  # bound at the suspect's own retain loss, or a weaker distance; then
#                                                  # where the accuracy goes (the distance, the restart, the rest)
#   bash benchmarks/d3_default_study.sh twenty-eighth-ft-check a|b [SEED [IMAGES]] # twenty-eighth round: plain
#                                                  # fine-tuning on the twenty-seventh round's check models
#   bash benchmarks/d3_default_study.sh twenty-eighth-der a|b [SEED] # twenty-eighth round, last: the faithful
#                                                  # presets and FT-SAM on the twenty-seventh round's check models
#   bash benchmarks/d3_default_study.sh twenty-eighth-curve # twenty-eighth round: test accuracy after every epoch,
#                                                  # the default and fine-tuning alone, two models, 500 images
#   bash benchmarks/d3_default_study.sh twenty-ninth-models a|b # twenty-ninth round: train its development models
#   bash benchmarks/d3_default_study.sh twenty-ninth-dev anchor|distill|distill-retain [SEED [IMAGES]] # 29th round: the
#                                                  # weights outside the distance pulled toward the suspect's, then
#                                                  # the suspect's soft targets, development models
#   bash benchmarks/d3_default_study.sh twenty-ninth-distill025 [SEED [IMAGES]] # twenty-ninth round: α 0.25 on the
#                                                  # plain images, three development models, 500 images
#   bash benchmarks/d3_default_study.sh thirtieth-leak decay|t1|scaled [SEED [IMAGES]] # thirtieth round: the soft targets
#                                                  # fading out, at T 1 or scaled, on the three models they left, 500 images
#   bash benchmarks/d3_default_study.sh thirtieth-dev NAME [SEED [IMAGES]] # thirtieth round: the default and a
#                                                  # soft-target candidate (distill-retain, decay) on development models
#   bash benchmarks/d3_default_study.sh thirtieth-check-new [SEED [NAME...]] # thirtieth round: the default before
#                                                  # it and the soft targets on the four check models the 29th left
#   bash benchmarks/d3_default_study.sh thirtieth-control [SEED] # thirtieth round: the default before it, 500
#                                                  # images, on the three models the soft targets left
#   bash benchmarks/d3_default_study.sh thirtieth-new-default # thirtieth round: the new default on two models
#   bash benchmarks/d3_default_study.sh thirtieth-check-small a|b IMAGES [SEED] # thirtieth round, after the default
#                                                  # changed: the default before and now on the check models
#   bash benchmarks/d3_default_study.sh thirty-first-bn dev|check|check-small [SEED [IMAGES [NAME...]]] # thirty-first round: the default
#                                                  # and its soft targets on models with BatchNorm (trains them first)
#   bash benchmarks/d3_default_study.sh thirty-first-new-default # thirty-first round: the new default on a model
#                                                  # with BatchNorm
#   bash benchmarks/d3_default_study.sh thirty-first-demo # thirty-first round: the soft targets on the README demo
#   bash benchmarks/d3_default_study.sh thirty-second-der base|sau [NAME...] # thirty-second round: the faithful
#                                                  # presets and FT-SAM, or SAU, for the DER bar (seed 0, 3,000 images)
#   bash benchmarks/d3_default_study.sh thirty-second-users [NAME...] # thirty-second round: three models of forms
#                                                  # new to the study, as users build them (trains them first)
#   bash benchmarks/d3_default_study.sh thirty-second-convmixer # thirty-second round: probes on the ConvMixer
#   bash benchmarks/d3_default_study.sh thirty-second-lmd [LMD] # thirty-second round: the default at lambda 0.5 on
#                                                  # five models with BatchNorm (a probe)
#   bash benchmarks/d3_default_study.sh thirty-third-rise users|dev|check|check-small [SEED [IMAGES [NAME...]]]
#                                                  # thirty-third round: lambda rising 0.5 -> 10
#   bash benchmarks/d3_default_study.sh thirty-third-screen SEED # thirty-third round: options on the ConvMixer
#   bash benchmarks/d3_default_study.sh thirty-third-fooled [RUN_DIR|user:NAME...] # thirty-third round: how many
#                                                  # retain images the copies fool at radius 0.03-0.06 (a probe)
#   bash benchmarks/d3_default_study.sh thirty-third-bn r05|lr03|esc2|copies-lr03 dev|check|check-small [SEED [IMAGES [NAME...]]]
#                                                  # thirty-third round: one option on the default of then
#   bash benchmarks/d3_default_study.sh thirty-third-users [NAME...] # thirty-third round: two user models with
#                                                  # BatchNorm (trains them first), the default now and `soft`
#   bash benchmarks/d3_default_study.sh thirty-third-convmixer # thirty-third round: the ConvMixer, default now
#   bash benchmarks/d3_default_study.sh thirty-third-new-default # thirty-third round: the default now on one model
#   bash benchmarks/d3_default_study.sh thirty-third-copies-users [NAME...] # thirty-third round: `copies` at lr 0.03
#   bash benchmarks/d3_default_study.sh thirty-fifth-check [NAME...] # thirty-fifth round: two check models trained
#                                                  # with mixup / random erasing (trains them first), the default now
#                                                  # and `soft-lr03`
#   bash benchmarks/d3_default_study.sh thirty-fifth-plain copy-labels|copy-soft dev|check [SEED [IMAGES]]
#                                                  # thirty-fifth round: thirty-fourth-bn's candidates on the models
#                                                  # without BatchNorm
#   bash benchmarks/d3_default_study.sh table [sixth|seventh|eighth] # the tables of BENCHMARKS.md (or from that round on)
# Runs go to $RUNS (runs/study); every step skips what is already done. Every step before the twenty-sixth round ran
# the default as it was before the twenty-fifth round, which is the `all-layers` preset now: `preset:all-layers` in
# the study's candidates and `--preset all-layers` on the user models (the twenty-fifth round's `o03-head`, all-layers
# with the distance on the classifier and the copies crafted once, was the default from then to the twenty-ninth
# round). The twenty-fifth to thirtieth rounds' steps ran that default: it is the `copies` preset now (the thirtieth
# round gave the default's BatchNorm rule the suspect's soft targets), `preset:copies` in their candidates (their
# recorded lines, spelled `preset:default` then, count as `copies`: d3_study.py reads a line without a
# `revision` that way); their `user_models purify` calls without --preset run models with BatchNorm, where the
# default is what it was. Should the default change again, the steps that spell `preset:default` must be made to
# name a preset that keeps it, or their recorded lines stop being what a rerun gives. (The thirty-first round gave
# the soft targets to models with BatchNorm too, and scaled them under epochs a caller sets above 12: the thirtieth
# round's `preset:default` steps ran models without BatchNorm at the preset's epochs, where nothing changed, and
# the user models' `purify` calls of the twenty-sixth and twenty-seventh rounds, which ran the default then on
# models with BatchNorm, now name `--preset copies`; benchmarks/user_models.py reads a recorded D3 line without a
# `revision` whose preset is `default` as `copies`. The thirty-third round gave models with BatchNorm lr 0.03 under
# the default: the steps of the thirty-first and thirty-second rounds, and the thirty-third's before the change, that
# ran the default of then on such models now name `preset:soft` / `--preset soft` (`soft_where_batchnorm` where a
# step's user models have BatchNorm or not); both scripts read a D3 line of revision 5 whose preset is `default` on a
# model with BatchNorm as `soft`, `distox.defenses.d3.preset_now`. The thirty-fifth round gave every model's soft
# targets to the copies only, D3 revision 7: the steps of the thirtieth to thirty-fourth rounds that ran the default
# of then name `preset:soft-lr03` / `--preset soft-lr03`, and a D3 line of revisions 4 to 6 whose preset is `default`
# reads as `soft-lr03`, on a model with BatchNorm at revisions 4 and 5 as above.) Steps before the fourth round
# ran the default preset as it was then, without the overlay augmentation: `preset:all-layers,blend:0`;
# steps before the sixth round ran it without its BatchNorm rule, `norm_rule:false`, and the eighth round's MLP
# steps without the ninth round's input pruning, `input_prune:false` (all spelled out below).
# d3_study.py passes --epochs (12) to every candidate, so the steps floor of the seventh round
# (`min_steps`, which never overrides epochs the caller set) did not act in any earlier step;
# `epochs:null` leaves the epochs to the preset and its floor.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/study}
PY=${PY:-.venv/bin/python}
DISTOX=${DISTOX:-.venv/bin/distox}
export OMP_NUM_THREADS=1
DEV="$RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 $RUNS/prn-wanet"
CHECK="$RUNS/rn18-blended $RUNS/vit-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug $RUNS/vgg-a2a-badnets"
NOBN="$RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets $RUNS/vit-badnets"
NEW="$RUNS/shufflenet-blended $RUNS/mnv3-lf $RUNS/regnet-badnets"  # seventh round's check models
CONV="$RUNS/cnn-convhead-blended $RUNS/cnn-convhead-plain-blended"  # eighth round's: a convolutional classifier
# the seven study models of the twenty-third round on (one process runs them in this order)
SEVEN=$(printf "$RUNS/%s " mnv3l-sig vgg-blended-s0 cnn-blended-s1 prn-wanet vgg-a2a-badnets rn18-blended mnv2-badnets)
# the twenty-sixth round's check models, cheapest first: without BatchNorm or with BatchNorm1d (trained by
# `twenty-sixth-check a`), attention models, a ShuffleNetV2 and the VGG19-BN (`twenty-sixth-check b`)
TWENTY_SIXTH_A="mlp-plain-badnets mlp-bn-blended mlp-sig-aug mlp-bn-lf mlp-badnets-aug lenet-badnets lenet-bn-badnets"
TWENTY_SIXTH_A+=" tutorial-badnets tutorial-blended cnn-plain-blended cnn-gn-badnets cnn-plain-badnets-aug"
TWENTY_SIXTH_B="vit-a2a-badnets vit-badnets hybrid-blended hybrid-badnets shufflenet-blended vgg19-wanet"
TWENTY_SIXTH_CHECK=$(printf "$RUNS/%s " $TWENTY_SIXTH_A $TWENTY_SIXTH_B)
# those with BatchNorm (or BatchNorm1d)
TWENTY_SIXTH_BN="mlp-bn-blended mlp-bn-lf lenet-bn-badnets hybrid-blended hybrid-badnets shufflenet-blended vgg19-wanet"
# the default from the twenty-fifth to the twenty-ninth round (`copies`), as the twenty-sixth to thirtieth rounds'
# steps run it, `all-layers` beside it, and `half`
the_default=(--candidate 'default=preset:copies,epochs:null')
all_layers_now=(--candidate 'all-layers=preset:all-layers,epochs:null')
twenty_sixth_half=(--candidate 'half=preset:copies,epochs:null,shared_fraction:0.5')
# the twenty-seventh round's development models: the twenty-sixth round's check models without BatchNorm (the rule
# for such models is what the round studies; it ran them cheapest first, an order that changes no cell)
TWENTY_SEVENTH_DEV=""
for name in $TWENTY_SIXTH_A $TWENTY_SIXTH_B; do
  [[ " $TWENTY_SIXTH_BN " == *" $name "* ]] || TWENTY_SEVENTH_DEV+=" $name"
done
# its check models, all without BatchNorm, of earlier rounds and never run on this machine (`name:step[:arg]`: the
# step that trains the model; the ViT Blended ran the default in the twenty-fifth round), cheapest first, in two
# halves side by side
TWENTY_SEVENTH_A="mlp-wanet:ninth-models mlp-blended-17:seventeenth-models mlp-sig-17:seventeenth-models"
TWENTY_SEVENTH_A+=" lenet-blended:lenet-models:blended lenet-wanet-18:eighteenth-trigger-models"
TWENTY_SEVENTH_A+=" cnn-plain-sig-17:seventeenth-models vit-blended:models"
TWENTY_SEVENTH_B="mlp-badnets-17:seventeenth-models lenet-badnets-17:seventeenth-models"
TWENTY_SEVENTH_B+=" cnn-plain-blended-ls:sixteenth-models cnn-convhead-plain-blended:conv-models:plain"
TWENTY_SEVENTH_B+=" tutorial-sig:tenth-models:sig tutorial-a2a:tenth-models:a2a vit-blended-ls:sixteenth-models"
# the candidate: the default with the features at lr 0.01 and the restarted classifier at 0.03 (`split`; the tenth
# round's `split-lr`, then without the copies), and the default at 0.01 throughout (`lr01`); after those two cost
# accuracy, the other way: everything at 0.05 (`lr05`), the classifier alone at 0.1 (`head10`)
twenty_seventh_split=(--candidate 'split=preset:copies,epochs:null,lr:0.01,classifier_lr:0.03')
twenty_seventh_cands=("${twenty_seventh_split[@]}" --candidate 'lr01=preset:copies,epochs:null,lr:0.01'
                      --candidate 'lr05=preset:copies,epochs:null,lr:0.05'
                      --candidate 'head10=preset:copies,epochs:null,classifier_lr:0.1')
# the default without the fourth round's overlay augmentation: the copies alone
twenty_seventh_no_overlay=(--candidate 'no-overlay=preset:copies,epochs:null,blend:0')
# the twenty-eighth round's candidates, each a single change to the default on models without BatchNorm: the
# hinge's bound ε at the suspect's own mean loss on the retain images (`eps-auto`, `eps:auto`, the twentieth round's
# rule, then tried on BatchNorm models only) and a weaker pull of the distance against the bound (`lmd30`, λ 30)
twenty_eighth_eps_auto=(--candidate 'eps-auto=preset:copies,epochs:null,eps:auto')
twenty_eighth_lmd30=(--candidate 'lmd30=preset:copies,epochs:null,lmd:30')
# and plain fine-tuning as the study runs it (`ft`: lr 0.01, 12 epochs of batch 32, weight decay 5e-4), what any
# fine-tuning on the retain images costs;
twenty_eighth_ft=(--candidate 'ft=method:ft')
# and, after both cost accuracy, where the default's accuracy goes on those models: the distance's pull made
# negligible (λ 10⁶, `nodist`: the restarted classifier trained on the bound alone, with the overlay and the copies),
# the classifier not restarted either (`nodist-near`: fine-tuning on the bound), and without the overlay and the
# copies (`nodist-plain`: fine-tuning on the bound at the default's rate and steps)
twenty_eighth_nodist_plain=(--candidate 'nodist-plain=preset:copies,epochs:null,lmd:1000000,init:near,blend:0,shared_radius:0')
twenty_eighth_where=(--candidate 'nodist=preset:copies,epochs:null,lmd:1000000'
                     --candidate 'nodist-near=preset:copies,epochs:null,lmd:1000000,init:near'
                     "${twenty_eighth_nodist_plain[@]}")
# and, after `nodist-plain` showed fine-tuning alone at the default's rate losing 7 points in its first epoch on an
# MLP and 42 on a LeNet-5 (500 images), the rate ramped up linearly over the first tenth or quarter of the steps
twenty_eighth_warmup=(--candidate 'wu10=preset:copies,epochs:null,warmup:0.1'
                      --candidate 'wu25=preset:copies,epochs:null,warmup:0.25')
# and last, with 500 images, the restarted classifier re-fitted first on its own (20 epochs of plain cross-entropy,
# the eleventh round's `head_warmup`), then the default's run (`hw20`) or one of 600 steps (`hw20-600`): fewer steps
# through the features once the classifier no longer needs them to re-fit
twenty_eighth_head_first=(--candidate 'hw20=preset:copies,epochs:null,head_warmup:20'
                          --candidate 'hw20-600=preset:copies,epochs:null,head_warmup:20,min_steps:600')
# the twenty-ninth round's candidates: the weights outside the distance pulled back toward the suspect's (L2-SP,
# `anchor` α: α · Σ ‖W − W⁰‖² / ‖W⁰‖² in the loss), weak and strong
twenty_ninth_anchor=(--candidate 'anchor01=preset:copies,epochs:null,anchor:0.1'
                     --candidate 'anchor1=preset:copies,epochs:null,anchor:1')
# and, after the pull showed the restarted classifier's re-fit to be the cost, that re-fit given the suspect's own
# clean outputs as soft targets (the third round's `distill` α at temperature 4, now beside the default's copies,
# each copy with its original's target): α 0.5 and 0.9
twenty_ninth_distill=(--candidate 'distill05=preset:copies,epochs:null,distill:0.5,shared_radius:0.03'
                      --candidate 'distill09=preset:copies,epochs:null,distill:0.9,shared_radius:0.03')
# and, after both left Blended backdoors, the soft targets taken on the plain retain images instead of the overlaid
# batches the loop trains on (`distill_source: retain`)
twenty_ninth_distill_retain=(--candidate 'distill05-retain=preset:copies,epochs:null,distill:0.5,shared_radius:0.03,distill_source:retain')
# and last, on the three models the soft targets left above their floors or nearest them, a weaker weight (α 0.25)
twenty_ninth_distill025=(--candidate 'distill025-retain=preset:copies,epochs:null,distill:0.25,shared_radius:0.03,distill_source:retain')
# the thirtieth round's: the soft targets' weight falling linearly to 0 over the run (`distill_schedule: decay`), and
# the soft targets at T 1 instead of 4 (less of the suspect's small outputs)
thirtieth_decay=(--candidate 'distill05-retain-decay=preset:copies,epochs:null,distill:0.5,shared_radius:0.03,distill_source:retain,distill_schedule:decay')
thirtieth_t1=(--candidate 'distill05-retain-t1=preset:copies,epochs:null,distill:0.5,shared_radius:0.03,distill_source:retain,distill_temperature:1')
# and the soft targets' weight scaled down where the steps floor repeats the images beyond the preset's 12 epochs
# (α · 12 / E: 0.5 at 3,000 images, 0.17 at 1,000, 0.08 at 500; `distill_scaled`)
thirtieth_scaled=(--candidate 'distill05-retain-scaled=preset:copies,epochs:null,distill:0.5,shared_radius:0.03,distill_source:retain,distill_scaled:true')
thirtieth_pick() {  # the thirtieth round's candidate arrays by name, into `picked`
  case $1 in
    decay) picked=("${thirtieth_decay[@]}") ;;
    t1) picked=("${thirtieth_t1[@]}") ;;
    scaled) picked=("${thirtieth_scaled[@]}") ;;
    distill-retain) picked=("${twenty_ninth_distill_retain[@]}") ;;
    default) picked=("${the_default[@]}") ;;
    *) echo "thirtieth: no candidate named $1" >&2; exit 2 ;;
  esac
}
sixth_default=(--candidate "default=preset:all-layers,norm_rule:false")
sixth_reference=(--candidate "d3-reference=preset:reference,augment:false")
sixth_paper=(--candidate "d3-paper=preset:paper,augment:false")
sixth_ft_sam=(--candidate "ft-sam=method:ft-sam,augment:false")
sixth_head=(--candidate "head-blend=preset:all-layers,norm_rule:false,layers:auto,init_layers:selected")
sixth_cands=("${sixth_default[@]}" "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_head[@]}"
             --candidate "ft=method:ft,augment:false")
# the seventh round's: the default as shipped now (its steps floor), and without the floor
seventh_floor=(--candidate "floor600=preset:all-layers,epochs:null")
# the eighteenth round's: a convolutional network's whole fully connected head restarted and in the distance
eighteenth_head=(--candidate "head=preset:all-layers,epochs:null,layers:linear-head,init_layers:linear-head")
sixteenth_scaled=(--candidate "logit-scaled=preset:all-layers,epochs:null,logit_scale:true")
# the default's distance as it was before the seventeenth round on a hybrid_vit: every nn.Linear and nn.Conv2d,
# not nn.MultiheadAttention's own in_proj_weight
seventeenth_linear=(--candidate 'linear-only=preset:all-layers,epochs:null,layers:["net.patch_embed.*","net.blocks.layers.0.self_attn.out_proj","net.blocks.layers.0.linear1","net.blocks.layers.0.linear2","net.blocks.layers.1.self_attn.out_proj","net.blocks.layers.1.linear1","net.blocks.layers.1.linear2","net.head"]')
seventeenth_floor=(--candidate "floor1128=preset:all-layers,epochs:null,min_steps:1128")
seventeenth_average=(--candidate "avg50=preset:all-layers,epochs:null,average:0.5"
                     --candidate "avg25=preset:all-layers,epochs:null,average:0.25")
seventh_without=(--candidate "default-shipped=preset:all-layers,min_steps:0")
# the eighth round's MLP steps: the default as it was then, before the ninth round's input pruning
# (which changes nothing on a model whose first weighted layer is a convolution)
eighth_floor=(--candidate "floor600=preset:all-layers,epochs:null,input_prune:false")
MLP7="$RUNS/mlp-plain-badnets $RUNS/mlp-bn-blended $RUNS/mlp-plain-blended $RUNS/mlp-bn-badnets $RUNS/mlp-d1-badnets $RUNS/mlp-bn-sig $RUNS/mlp-d4-blended"
MLPCHECK="$RUNS/mlp-sig-aug $RUNS/mlp-bn-lf $RUNS/mlp-badnets-aug $RUNS/mlp-bn-a2a-badnets"  # ninth round's check
ninth_cands=(--candidate "prune=preset:all-layers,epochs:null" --candidate "no-prune=preset:all-layers,epochs:null,input_prune:false")
TWELFTH="$RUNS/mnv3l-sig $RUNS/mnv2-badnets $RUNS/vgg-blended-t5"  # twelfth round's check models
CHECK_NAMES="rn18-blended vit-blended vgg-sam-blended vgg-badnets-aug vgg-a2a-badnets"

attack() {  # attack NAME ATTACK OPTIONS...: one backdoored model and its clean reference
  local out=$RUNS/$1; shift
  # ONLY="NAME ...": train only those (a later step that needs one model of an earlier step's list)
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" ${out##*/} "* ]]; then return 0; fi
  [ -f "$out/metrics.json" ] || $DISTOX attack "$@" --out "$out" --clean-reference --quiet
}

study() { $PY benchmarks/d3_study.py "$@"; }
# train one of the twenty-sixth round's check models (run directory $RUNS/NAME) with the steps that hold its half
train_twenty_sixth_model() {
  local steps="norm-models seventeenth-models new-models fourteenth-models" step
  [[ " $TWENTY_SIXTH_A " == *" $1 "* ]] && steps="mlp-models ninth-models lenet-models tenth-models norm-models"
  for step in $steps; do ONLY=$1 bash "$0" $step; done
}
# the twenty-seventh round's check entries (`name:step[:arg]`) of half a (or b), and those models' run directories
twenty_seventh_entries() { if [ "${1:-a}" = a ]; then echo $TWENTY_SEVENTH_A; else echo $TWENTY_SEVENTH_B; fi; }
twenty_seventh_runs() {
  local entry
  for entry in $(twenty_seventh_entries "$1"); do printf "$RUNS/%s " "${entry%%:*}"; done
}

USER_RUNS=${USER_RUNS:-runs/user}
# the faithful presets and the baselines as the study runs them on the user models (with `--epochs 12`): batch 32, no
# augmentation
TWELVE='{"batch_size": 32, "augment": false}'
user_models() { $PY benchmarks/user_models.py "$@" --out $USER_RUNS; }  # user_models COMMAND ARGS...
#: the user models with BatchNorm, whose default before the thirty-third round is the `soft` preset now
USER_BATCHNORM="keras-cnn keras-cnn-x resnet18 resnet18-patch resnet18-adam mobilenet-v3-small convmixer
  efficientnet-lite densenet-lite"
bn_part() {  # bn_part STEP PART: the thirty-first round's models with BatchNorm of PART (dev, check, check-small)
  case $2 in
    dev) echo "cnn-blended-s1 vgg-blended-s0 vgg-a2a-badnets vgg-blended-t5" ;;
    check) echo "vgg-sam-blended vgg-badnets-aug rn18-blended" ;;
    check-small) echo "mlp-bn-blended mlp-bn-lf lenet-bn-badnets" ;;
    *) echo "$1: dev, check or check-small, not $2" >&2; return 2 ;;
  esac
}
soft_where_batchnorm() {  # soft_where_batchnorm NAME... -- ARGS...: `user_models purify` as the default ran in the
  # thirty-first and thirty-second rounds: `--preset soft` on a model with BatchNorm, `--preset soft-lr03` on one
  # without (there the same)
  local names=()
  while [ "$1" != -- ]; do names+=("$1"); shift; done
  shift
  for name in "${names[@]}"; do
    if [[ " $(echo $USER_BATCHNORM) " == *" $name "* ]]; then user_models purify $name --preset soft "$@"
    else user_models purify $name --preset soft-lr03 "$@"; fi
  done
}

distill_on_of() {  # distill_on_of STEP LABEL: the `distill_on` value of a thirty-fourth-round candidate
  case $2 in
    copy-labels) echo images ;;
    copy-soft) echo copies ;;
    *) echo "$1: copy-labels or copy-soft, not $2" >&2; return 2 ;;
  esac
}
distill_on_candidate() {  # distill_on_candidate STEP LABEL: that candidate as d3_study.py takes it (the default of
  # the thirty-third and thirty-fourth rounds, `soft-lr03`, with its `distill_on`)
  local on
  on=$(distill_on_of "$1" "$2") || return 2
  echo "$2=epochs:null,preset:soft-lr03,distill_on:$on"
}

dev_or_check() {  # dev_or_check NAME "DEV RUNS" "CHECK RUNS" CANDIDATE PART SEED...: one candidate on the
  # development or the check part, a file per seed ($RUNS/NAME-PART-sSEED.jsonl)
  local name=$1 dev=$2 check=$3 candidate=$4 part=$5 runs seed
  shift 5
  case $part in
    dev) runs=$dev ;;
    check) runs=$check ;;
    *) echo "part must be dev or check; got '$part'" >&2; exit 2 ;;
  esac
  for seed in "$@"; do
    study $runs --final-only --seed $seed --out $RUNS/$name-$part-s$seed.jsonl --candidate "$candidate"
  done
}

demo_table() {  # demo_table TITLE CANDIDATES_JSON: D3 on the README demo at seeds 0-2, ACC change / ASR, a row
  # per candidate (its D3 options over the demo's)
  TITLE="$1" CANDIDATES="$2" $PY - <<'PY'
import json
import os

from distox.demo import DemoConfig, run_demo

print(f"| {os.environ['TITLE']} | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|")
for name, opts in json.loads(os.environ["CANDIDATES"]).items():
    cells = []
    for seed in (0, 1, 2):
        report = run_demo(DemoConfig(seed=seed, methods=("d3",), d3_options=opts), progress=False)
        before, after = report.row("no defense"), report.row("d3")
        cells.append(f"{after['acc'] - before['acc']:+.2f} / {after['asr']:.2f}")
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
PY
}

fourth_round() {  # fourth_round [dev|check] [SEED ...]: the fourth round's cells and files (dev at seeds
  # 0-2 with $dev_cands, check at 0-1 with $check_cands), one study process per call
  local part=${1:-all} seeds s
  shift || true
  seeds=${*:-}
  if [ "$part" != check ]; then
    for s in ${seeds:-0 1 2}; do study $DEV --final-only --seed $s --out $RUNS/blend-dev-s$s.jsonl "${dev_cands[@]}"; done
  fi
  if [ "$part" != dev ]; then
    for s in ${seeds:-0 1}; do study $CHECK --final-only --seed $s --out $RUNS/blend-check-s$s.jsonl "${check_cands[@]}"; done
  fi
}

case "${1:-}" in
  models)
    # development part: the models the default was chosen on
    attack cnn-blended-s1 blended --model small_cnn --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 1
    attack vgg-blended-s0 blended --model small_vgg --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 0
    attack prn-wanet wanet --model preactresnet18 --width 0.125 --epochs 6 --batch-size 128 --train-subset 30000 --test-subset 2000 --seed 2
    # check part: other architectures, attacks and recipes, run once per candidate, never tuned on
    attack rn18-blended blended --model torchvision:resnet18 --epochs 3 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 6
    attack vit-blended blended --model small_vit --epochs 8 --lr 0.03 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 8 --no-augment
    attack vgg-sam-blended blended --model small_vgg --width 16 --sam-rho 1.0 --epochs 4 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 7 --no-augment
    attack vgg-badnets-aug badnets --model small_vgg --width 16 --epochs 6 --batch-size 128 --train-subset 30000 --test-subset 2000 --seed 3
    attack vgg-a2a-badnets badnets --model small_vgg --width 16 --mode all2all --epochs 6 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 9 --no-augment
    ;;
  explore)  # per-epoch test curves kept for the report; the defense never sees them
    study $DEV --out $RUNS/explore.jsonl \
      --candidate "paper=preset:paper,augment:false" \
      --candidate "reference=preset:reference,augment:false" \
      --candidate "paper-heldout=preset:paper,augment:false,select:heldout" \
      --candidate "reference-heldout=preset:reference,augment:false,select:heldout" \
      --candidate "lmd2-heldout=preset:reference,lmd:2,augment:false,select:heldout" \
      --candidate "paper-freeze-bn=preset:paper,augment:false,freeze_bn:true" \
      --candidate "paper-init-far=preset:paper,augment:false,init:far" \
      --candidate "lmd-controller=preset:reference,lmd:10,augment:false,select:heldout,lmd_control:heldout" \
      --candidate "lmd-geometric=preset:reference,augment:false,lmd_control:geometric,select:heldout" \
      --candidate "all-random=preset:reference,layers:all,lmd:10,augment:false,select:heldout" \
      --candidate "all-near=preset:reference,layers:all,init:near,lmd:10,augment:false,select:heldout" \
      --candidate "all-near-geometric=preset:reference,layers:all,init:near,lmd_control:geometric,augment:false,select:heldout" \
      --candidate "all-head-geometric=preset:reference,layers:all,init_layers:classifier,lmd_control:geometric,augment:false,select:heldout" \
      --candidate "all-head=preset:reference,layers:all,init_layers:classifier,lmd:10,augment:false,select:heldout" \
      --candidate "all-head-freeze-bn=preset:reference,layers:all,init_layers:classifier,lmd:10,augment:false,select:heldout,freeze_bn:true"
    ;;
  final)
    study $DEV $CHECK --final-only --out $RUNS/final.jsonl \
      --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" \
      --candidate "d3-paper=preset:paper,augment:false" \
      --candidate "d3-reference=preset:reference,augment:false" \
      "${sixth_ft_sam[@]}" \
      --candidate "ft=method:ft,augment:false" \
      --candidate "sau=method:sau,augment:false" \
      --candidate "d3-reference-100ep=preset:reference,epochs:100,batch_size:256,augment:true"
    ;;
  retain)
    for n in 500 1000; do
      study $DEV $CHECK --final-only --count $n --out $RUNS/final-$n.jsonl --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0"
    done
    ;;
  seed1)  # another retain draw and D3 seed
    study $DEV $CHECK --final-only --seed 1 --out $RUNS/final-seed1.jsonl --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" \
      --candidate "d3-paper=preset:paper,augment:false" --candidate "d3-reference=preset:reference,augment:false"
    ;;
  lmd)  # λ around the default's, dev part, two seeds
    for s in 0 1; do
      study $DEV --final-only --seed $s --out $RUNS/lmd-s$s.jsonl \
        --candidate "default-lmd5=preset:all-layers,norm_rule:false,blend:0,lmd:5" --candidate "default-lmd3=preset:all-layers,norm_rule:false,blend:0,lmd:3"
    done
    ;;
  screen)  # second round (BENCHMARKS "Second round"): dev part, retain seed 0
    study $DEV --final-only --out $RUNS/screen.jsonl \
      --candidate "default-aug=preset:all-layers,norm_rule:false,blend:0,augment:true" \
      --candidate "default-eps0.05=preset:all-layers,norm_rule:false,blend:0,eps:0.05" \
      --candidate "default-loss-lmd=preset:all-layers,norm_rule:false,blend:0,lmd_control:loss,lmd_range:[1,1000]" \
      --candidate "default-angle=preset:all-layers,norm_rule:false,blend:0,layer_weighting:angle" \
      --candidate "default-d3seed1=preset:all-layers,norm_rule:false,blend:0,seed:1" \
      --candidate "default-d3seed2=preset:all-layers,norm_rule:false,blend:0,seed:2"
    study $RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 $RUNS/vit-blended --final-only --count 500 --out $RUNS/screen-500.jsonl \
      --candidate "default=preset:all-layers,norm_rule:false,blend:0" \
      --candidate "default-init-near=preset:all-layers,norm_rule:false,blend:0,init:near" \
      --candidate "paper=preset:paper,augment:false" \
      --candidate "default-lmd30=preset:all-layers,norm_rule:false,blend:0,lmd:30" \
      --candidate "default-24ep=preset:all-layers,norm_rule:false,blend:0,epochs:24" \
      --candidate "ft=method:ft,augment:false"
    ;;
  distill)  # the suspect's own clean outputs as a soft target (BENCHMARKS "Third round"): dev Blended models, seeds 0-2
    for s in 0 1 2; do
      study $RUNS/cnn-blended-s1 --final-only --seed $s --out $RUNS/distill-a-s$s.jsonl \
        --candidate "d3-all=preset:all-layers,norm_rule:false,blend:0,layers:all" --candidate "distill0.5=preset:all-layers,norm_rule:false,blend:0,distill:0.5" &
      study $RUNS/vgg-blended-s0 --final-only --seed $s --out $RUNS/distill-b-s$s.jsonl \
        --candidate "d3-all=preset:all-layers,norm_rule:false,blend:0,layers:all" --candidate "distill0.5=preset:all-layers,norm_rule:false,blend:0,distill:0.5"
      wait
    done
    ;;
  stem)  # the distance over every layer but the stem (BENCHMARKS "Third round"): dev Blended models, seeds 0-2
    for s in 0 1 2; do
      study $RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 --final-only --seed $s --out $RUNS/stem-b-s$s.jsonl \
        --candidate "d3-all=preset:all-layers,norm_rule:false,blend:0,layers:all" --candidate "all-but-first=preset:all-layers,norm_rule:false,blend:0,layers:all-but-first"
    done
    ;;
  small)  # 500 images: augmentation and more epochs (BENCHMARKS "Fewer retain images"): dev Blended models, seeds 0-1
    for s in 0 1; do
      study $RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 --final-only --count 500 --seed $s --out $RUNS/small-s$s.jsonl \
        --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" --candidate "aug=preset:all-layers,norm_rule:false,blend:0,augment:true" \
        --candidate "aug-36ep=preset:all-layers,norm_rule:false,blend:0,augment:true,epochs:36"
    done
    ;;
  bias)  # the warm start also zeroes the classifier's bias (BENCHMARKS "Third round"): dev Blended models, seeds 0-2
    for s in 0 1 2; do
      study $RUNS/cnn-blended-s1 --final-only --seed $s --out $RUNS/bias-a-s$s.jsonl \
        --candidate "head-bias-zero=preset:all-layers,norm_rule:false,blend:0,head_bias:zero" &
      study $RUNS/vgg-blended-s0 --final-only --seed $s --out $RUNS/bias-b-s$s.jsonl \
        --candidate "head-bias-zero=preset:all-layers,norm_rule:false,blend:0,head_bias:zero"
      wait
    done
    ;;
  blend)  # the overlay augmentation (BENCHMARKS "Fourth round"): dev at three seeds, check at two
    dev_cands=(--candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3"
               --candidate "ft-blend=method:ft,augment:false,blend:0.3")
    check_cands=(--candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3")
    fourth_round "${@:2}"
    ;;
  baselines)  # the faithful presets and FT-SAM on the fourth round's cells (same files, so `table` compares them)
    dev_cands=(--candidate "d3-reference=preset:reference,augment:false" --candidate "d3-paper=preset:paper,augment:false"
               "${sixth_ft_sam[@]}")
    check_cands=("${dev_cands[@]}")
    fourth_round "${@:2}"
    ;;
  reference-blend)  # the reference preset (final classifier, lambda 0.5) with the overlay, on the same cells
    dev_cands=(--candidate "reference-blend=preset:reference,augment:false,blend:0.3")
    check_cands=("${dev_cands[@]}")
    fourth_round "${@:2}"
    ;;
  retain-blend)  # the default with and without its overlay augmentation, 500 and 1,000 retain images (seed 0)
    for n in 500 1000; do
      study $DEV $CHECK --final-only --count $n --out $RUNS/blend-$n.jsonl --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3" \
        --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0"
    done
    ;;
  tail)  # fine-tuning after D3 (BENCHMARKS "Fourth round"): dev Blended models at seeds 0-2, the ViT at 0-1
    for s in 0 1 2; do
      models="$RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0"; [ $s = 2 ] || models="$models $RUNS/vit-blended"
      study $models --final-only --seed $s --out $RUNS/tail-s$s.jsonl \
        --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" --then "ft4=method:ft,epochs:4,lr:0.01,augment:false"
      study $models --final-only --seed $s --out $RUNS/tail-s$s.jsonl \
        --candidate "d3-6ep=preset:all-layers,norm_rule:false,blend:0,epochs:6" --then "ft6=method:ft,epochs:6,lr:0.005,augment:false"
    done
    ;;
  curves)  # the default's per-epoch test ACC/ASR (BENCHMARKS "Fourth round"), VGG Blended, seeds 0-2
    for s in 0 1 2; do
      study $RUNS/vgg-blended-s0 --seed $s --out $RUNS/curves-s$s.jsonl --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0"
    done
    ;;
  fifth)  # fifth round (BENCHMARKS "Fifth round"): the hard Blended cells at seeds 0-2; FT with the overlay on the rest
    for s in 0 1 2; do
      models="$RUNS/vit-blended $RUNS/vgg-blended-s0 $RUNS/cnn-blended-s1"
      study $models --final-only --seed $s --out $RUNS/fifth-s$s.jsonl \
        --candidate "blend15=preset:all-layers,norm_rule:false,blend:0.15" --candidate "ft-blend=method:ft,augment:false,blend:0.3" \
        --candidate "near-blend=preset:all-layers,norm_rule:false,init:near" --candidate "noise-blend=preset:all-layers,norm_rule:false,init:noise" \
        --candidate "lmd20-blend=preset:all-layers,norm_rule:false,lmd:20" --candidate "lmd40-blend=preset:all-layers,norm_rule:false,lmd:40" \
        --candidate "geo10-40-blend=preset:all-layers,norm_rule:false,lmd_control:geometric,lmd_range:[10,40]"
      study $models --final-only --seed $s --out $RUNS/fifth-s$s.jsonl \
        --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3" --then "ft3=method:ft,epochs:3,lr:0.003,augment:false"
      study $models --final-only --seed $s --out $RUNS/fifth-s$s.jsonl \
        --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3" --then "ftblend4=method:ft,epochs:4,lr:0.005,augment:false,blend:0.3"
    done
    for s in 0 1; do
      study $RUNS/rn18-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug $RUNS/vgg-a2a-badnets --final-only --seed $s \
        --out $RUNS/fifth-s$s.jsonl --candidate "ft-blend=method:ft,augment:false,blend:0.3"
    done
    # the candidate that became the default (init:noise) on the rest of the fourth round's cells
    for s in 0 1 2; do
      models="$RUNS/prn-wanet"; [ $s = 2 ] || models="$models $RUNS/rn18-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug $RUNS/vgg-a2a-badnets"
      study $models --final-only --seed $s --out $RUNS/fifth-s$s.jsonl --candidate "noise-blend=preset:all-layers,norm_rule:false,init:noise"
    done
    for n in 500 1000; do  # the same with fewer clean images (seed 0), beside the retain-blend step's rows
      study $DEV $CHECK --final-only --count $n --out $RUNS/blend-$n.jsonl --candidate "noise-blend=preset:all-layers,norm_rule:false,init:noise"
    done
    # the ViT at seed 2 (the fifth round's third seed there) for the candidates it is compared with
    study $RUNS/vit-blended --final-only --seed 2 --out $RUNS/fifth-s2.jsonl \
      --candidate "d3-default=preset:all-layers,norm_rule:false,blend:0" --candidate "default-blend=preset:all-layers,norm_rule:false,blend:0.3" \
      --candidate "d3-reference=preset:reference,augment:false" --candidate "d3-paper=preset:paper,augment:false" \
      "${sixth_ft_sam[@]}"
    ;;
  sau)  # SAU (4-30 min a cell) at seed 0 on the given study runs (default: all eight), beside the fourth round's cells
    runs="${*:2}"
    study ${runs:-$DEV $CHECK} --final-only --seed 0 --out $RUNS/sau-s0.jsonl --candidate "sau=method:sau,augment:false"
    ;;
  demo)  # the README demo (digits, 67 clean images) as one more model none of the candidates was chosen on
    demo_table "D3 (demo budget: 60 epochs)" '{"default": {}, "init noise": {"init": "noise"}, "init near": {"init": "near"},
      "lmd 20": {"lmd": 20}, "lmd 40": {"lmd": 40}, "blend 0.15": {"blend": 0.15}, "blend 0 (before)": {"blend": 0}}'
    ;;
  norm-models)  # sixth round: models whose convs/linears no BatchNorm follows (the ViT was the only one)
    if [ "${2:-cnn}" = cnn ]; then
      attack cnn-plain-blended blended --model small_cnn --model-kwarg norm=none --width 16 --epochs 6 --lr 0.03 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 4 --no-augment
      attack cnn-gn-badnets badnets --model small_cnn --model-kwarg norm=group --width 16 --epochs 6 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 5
      # the check model of this round, run once per candidate
      attack cnn-plain-badnets-aug badnets --model small_cnn --model-kwarg norm=none --width 24 --epochs 6 --lr 0.03 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 11
    fi
    if [ "${2:-vit}" = vit ]; then
      attack vit-badnets badnets --model small_vit --epochs 8 --lr 0.03 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 10 --no-augment
      # a second check model of this round (another ViT shape and trigger), run once per candidate
      # (WaNet on this ViT, 10 epochs, reached 4 % ASR: no backdoor to remove, so not a study model)
      attack vit-a2a-badnets badnets --model small_vit --model-kwarg depth=3 --model-kwarg patch_size=7 --model-kwarg image_size=28 --width 96 --mode all2all --epochs 10 --lr 0.03 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 12 --no-augment
    fi
    ;;
  sixth)  # sixth round: what D3 should do on a model without BatchNorm
    seeds="${*:2}"
    for s in ${seeds:-0 1 2}; do
      study $NOBN --final-only --seed $s --out $RUNS/sixth-s$s.jsonl "${sixth_cands[@]}"
      # the ViT Blended has the others' rows in the fourth/fifth-round files
      study $RUNS/vit-blended --final-only --seed $s --out $RUNS/sixth-s$s.jsonl "${sixth_head[@]}"
    done
    ;;
  sixth-retain)  # sixth round: 500 and 1,000 images (seed 0) on the four models without BatchNorm
    for n in 500 1000; do
      study $NOBN $RUNS/vit-blended --final-only --count $n --out $RUNS/sixth-$n.jsonl "${sixth_default[@]}" \
        "${sixth_paper[@]}" "${sixth_head[@]}"
    done
    ;;
  plain)  # sixth round: more epochs or a larger learning rate on the plain CNN (seeds 0-2)
    for s in 0 1 2; do
      study $RUNS/cnn-plain-blended --final-only --seed $s --out $RUNS/probe-plain-s$s.jsonl \
        --candidate "default-24ep=preset:all-layers,norm_rule:false,epochs:24" \
        --candidate "default-36ep=preset:all-layers,norm_rule:false,epochs:36" \
        --candidate "paper-24ep=preset:paper,augment:false,epochs:24" \
        --candidate "default-lr0.03=preset:all-layers,norm_rule:false,lr:0.03"
    done
    ;;
  nobn-lr)  # sixth round: the shipped default's classifier-only distance at a larger lr or more epochs,
    # the four models without BatchNorm (seeds 0-2) and the check model (0-1)
    seeds="${*:2}"
    for s in ${seeds:-0 1 2}; do
      runs="$NOBN $RUNS/vit-blended"; [ "$s" = 2 ] || runs="$runs $RUNS/cnn-plain-badnets-aug"
      study $runs --final-only --seed $s --out $RUNS/nobn-lr-s$s.jsonl \
        --candidate "head-lr0.03=preset:all-layers,layers:auto,lr:0.03" \
        --candidate "head-lr0.02=preset:all-layers,layers:auto,lr:0.02" \
        --candidate "head-24ep=preset:all-layers,layers:auto,epochs:24"
    done
    ;;
  shipped)  # sixth round: the default as shipped (with its BatchNorm rule) on every cell of the study:
    # dev and the models without BatchNorm at seeds 0-2, the check part at 0-1 and the ViT Blended at 2
    seeds="${*:2}"
    for s in ${seeds:-0 1 2}; do
      case $s in 2) runs="$DEV $NOBN $RUNS/vit-blended";; *) runs="$DEV $NOBN $CHECK $RUNS/cnn-plain-badnets-aug";; esac
      study $runs --final-only --seed $s --out $RUNS/shipped-s$s.jsonl --candidate "default-shipped=preset:all-layers"
    done
    ;;
  shipped-retain)  # sixth round: the default as shipped with 500 and 1,000 images (seed 0), every model
    for n in 500 1000; do
      study $DEV $CHECK $NOBN --final-only --count $n --out $RUNS/shipped-$n.jsonl --candidate "default-shipped=preset:all-layers"
    done
    ;;
  small-epochs)  # sixth round: with 500 images, the shipped default at 3x and 6x the epochs (seed 0), every
    # model; `small-epochs 36` and `small-epochs 72` side by side
    for e in ${2:-36 72}; do
      study $DEV $CHECK $NOBN $RUNS/cnn-plain-badnets-aug --final-only --count 500 --out $RUNS/small-epochs-$e.jsonl \
        --candidate "shipped-${e}ep=preset:all-layers,epochs:$e"
    done
    ;;
  sixth-check)  # sixth round: the check models without BatchNorm, seeds 0-1, once per candidate
    for s in 0 1; do
      study $RUNS/cnn-plain-badnets-aug --final-only --seed $s --out $RUNS/sixth-check-s$s.jsonl "${sixth_cands[@]}"
      # the second check model, trained after the rule was chosen: the default as shipped and without the rule
      study $RUNS/vit-a2a-badnets --final-only --seed $s --out $RUNS/sixth-check-s$s.jsonl \
        --candidate "default-shipped=preset:all-layers" --candidate "default=preset:all-layers,norm_rule:false"
    done
    ;;
  lr)  # sixth round: every cell with the default at learning rates 0.02 and 0.03
    seeds="${*:2}"
    for s in ${seeds:-0 1}; do
      study $DEV $RUNS/cnn-plain-blended --final-only --seed $s --out $RUNS/lr-s$s.jsonl \
        --candidate "lr0.03=preset:all-layers,norm_rule:false,lr:0.03" --candidate "lr0.02=preset:all-layers,norm_rule:false,lr:0.02"
    done
    ;;
  seventh)  # seventh round: the default as shipped now (its steps floor: 38 epochs at 500 images, 19 at
    # 1,000) against the default without the floor (12 epochs), every model; vit-a2a-badnets is the check
    for n in ${2:-500 1000}; do
      seeds="${*:3}"
      for s in ${seeds:-0 1}; do
        study $DEV $CHECK $NOBN $RUNS/cnn-plain-badnets-aug $RUNS/vit-a2a-badnets --final-only --count $n --seed $s \
          --out $RUNS/seventh-$n-s$s.jsonl \
          "${seventh_floor[@]}" "${seventh_without[@]}"
      done
    done
    ;;
  demo-floor)  # seventh round: the README demo (digits, 67 clean images) with the steps floor deciding its epochs
    demo_table "D3 on the demo" '{"demo'"'"'s 60 epochs": {}, "the floor (epochs unset: 200)": {"epochs": null}, "12 epochs": {"epochs": 12}}'
    ;;
  new-models)  # seventh round: check models of three architectures the study never had
    attack shufflenet-blended blended --model torchvision:shufflenet_v2_x0_5 --epochs 8 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 13
    attack mnv3-lf lf --model torchvision:mobilenet_v3_small --epochs 6 --lr 0.05 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 14
    # a third, trained after the first two had run (same session); WaNet did not implant on it (ASR 3.48 %,
    # a clean model's 3.92 %), so it is not a study model and BadNets took its place
    attack regnet-wanet wanet --model torchvision:regnet_y_400mf --epochs 6 --batch-size 128 --train-subset 30000 --test-subset 2000 --seed 16
    attack regnet-badnets badnets --model torchvision:regnet_y_400mf --epochs 6 --batch-size 128 --train-subset 30000 --test-subset 2000 --seed 17 --no-augment
    ;;
  seventh-check)  # seventh round, once per candidate on the new check models (seed 0)
    for n in 500 1000; do
      study $NEW --final-only --count $n --out $RUNS/seventh-check-$n.jsonl \
        "${seventh_floor[@]}" "${seventh_without[@]}"
    done
    study $NEW --final-only --out $RUNS/seventh-check-3000.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    # a second retain draw at 3,000 images, D3 only
    study $NEW --final-only --seed 1 --out $RUNS/seventh-check-3000-s1.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}"
    ;;
  seventh-diagnose)  # seventh round, after the check: why the MobileNetV3 LF stays above its floor (per-epoch
    # test curves of the default, kept for the report; two stronger variants). Diagnosis only: the
    # default was not changed after it
    study $RUNS/mnv3-lf --out $RUNS/seventh-diagnose-curves.jsonl --candidate "default=preset:all-layers,epochs:null"
    study $RUNS/mnv3-lf --final-only --out $RUNS/seventh-diagnose.jsonl --candidate "lmd5=preset:all-layers,lmd:5" \
      --candidate "24ep=preset:all-layers,epochs:24" --candidate "blend0.45=preset:all-layers,blend:0.45"
    ;;
  conv-models)  # eighth round: a classifier that is a 1x1 convolution, averaged (no nn.Linear), with and without
    # BatchNorm (`conv-models blended` and `conv-models plain` can run side by side)
    if [ "${2:-blended}" = blended ]; then
      attack cnn-convhead-blended blended --model small_cnn --model-kwarg head=conv --width 16 --epochs 6 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 18 --no-augment
    fi
    if [ "${2:-plain}" = plain ]; then
      # BadNets did not implant on the model without BatchNorm (ASR 43.75 %, then 63.59 % at lr 0.1 for 10
      # epochs; a 3x3 patch averaged away by the class maps' mean?), so Blended took its place
      attack cnn-convhead-plain-badnets badnets --model small_cnn --model-kwarg head=conv --model-kwarg norm=none --width 16 --epochs 6 --lr 0.03 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 19
      attack cnn-convhead-plain-badnets2 badnets --model small_cnn --model-kwarg head=conv --model-kwarg norm=none --width 16 --epochs 10 --lr 0.1 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 19
      attack cnn-convhead-plain-blended blended --model small_cnn --model-kwarg head=conv --model-kwarg norm=none --width 16 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 19 --no-augment
    fi
    ;;
  eighth)  # eighth round: on the two conv-head models, the default as shipped (no warm start on a conv head; on
    # the model without BatchNorm the rule's classifier-only distance at lr 0.03 on it, which `head-rule`
    # spells out), what the default ran there before `layers="auto"` found conv heads (no warm start, no
    # rule: `before`), turning the conv head as the default turns an nn.Linear classifier (`init_layers:auto`;
    # without BatchNorm with the rule), the faithful presets (which needed an nn.Linear before) and FT-SAM;
    # 3,000 images, then the default and the variants at 500 and 1,000 (one process per seed)
    turned_bn=(--candidate "head-turned=preset:all-layers,epochs:null,init_layers:auto")
    turned_plain=(--candidate "head-turned=preset:all-layers,epochs:null,init_layers:auto,layers:auto,lr:0.03")
    before=(--candidate "before=preset:all-layers,epochs:null,init:near,norm_rule:false")
    for seed in "${@:2}"; do
      for n in 3000 500 1000; do
        out=$RUNS/eighth-$n-s$seed.jsonl
        study $RUNS/cnn-convhead-blended --final-only --seed "$seed" --count $n --out $out "${turned_bn[@]}"
        study $RUNS/cnn-convhead-plain-blended --final-only --seed "$seed" --count $n --out $out "${turned_plain[@]}"
        # added after the above, and then shipped: the BatchNorm rule's distance and lr on the conv head,
        # without the warm start (floor600 ran as `before` on this model until then)
        study $RUNS/cnn-convhead-plain-blended --final-only --seed "$seed" --count $n --out $out \
          --candidate "head-rule=preset:all-layers,epochs:null,layers:auto,lr:0.03"
        study $CONV --final-only --seed "$seed" --count $n --out $out "${seventh_floor[@]}" "${before[@]}"
        if [ $n = 3000 ]; then
          study $CONV --final-only --seed "$seed" --out $out "${sixth_reference[@]}" "${sixth_paper[@]}" \
            "${sixth_ft_sam[@]}"
        fi
      done
    done
    ;;
  conv-check)  # eighth round, once: check models for the conv-head handling, trained after it was chosen
    if [ "${2:-sig}" = sig ]; then
      attack cnn-convhead-plain-sig sig --model small_cnn --model-kwarg head=conv --model-kwarg norm=none --width 24 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 20 --no-augment --poison-rate 0.08
    fi
    if [ "${2:-lf}" = lf ]; then
      attack cnn-convhead-plain-lf lf --model small_cnn --model-kwarg head=conv --model-kwarg norm=none --width 24 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 21 --no-augment
    fi
    if [ -z "${2:-}" ]; then
      for n in 3000 500 1000; do
        study $RUNS/cnn-convhead-plain-sig $RUNS/cnn-convhead-plain-lf --final-only --count $n --out $RUNS/eighth-check-$n.jsonl "${seventh_floor[@]}" \
          --candidate "before=preset:all-layers,epochs:null,init:near,norm_rule:false" \
          --candidate "head-turned=preset:all-layers,epochs:null,init_layers:auto,layers:auto,lr:0.03"
      done
      study $RUNS/cnn-convhead-plain-sig $RUNS/cnn-convhead-plain-lf --final-only --out $RUNS/eighth-check-3000.jsonl \
        "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    fi
    ;;
  mlp-models)  # eighth round: check models without any convolution (`mlp-models plain` and `mlp-models bn` can
    # run side by side)
    if [ "${2:-plain}" = plain ]; then
      attack mlp-plain-badnets badnets --model small_mlp --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 22 --no-augment
    fi
    if [ "${2:-bn}" = bn ]; then
      attack mlp-bn-blended blended --model small_mlp --model-kwarg norm=batch --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 23 --no-augment
    fi
    ;;
  mlp)  # eighth round, once on the two MLPs
    MLP="$RUNS/mlp-plain-badnets $RUNS/mlp-bn-blended"
    study $MLP --final-only --out $RUNS/mlp-3000.jsonl "${eighth_floor[@]}" "${sixth_reference[@]}" "${sixth_paper[@]}" \
      "${sixth_ft_sam[@]}"
    study $MLP --final-only --seed 1 --out $RUNS/mlp-3000-s1.jsonl "${eighth_floor[@]}"
    for n in 500 1000; do
      study $MLP --final-only --count $n --out $RUNS/mlp-$n.jsonl "${eighth_floor[@]}"
    done
    ;;
  mlp-explore)  # eighth round: the default fails on both MLPs; what would remove their backdoors? (a lead only)
    for seed in 0 1 2; do
      study $RUNS/mlp-plain-badnets $RUNS/mlp-bn-blended --final-only --seed $seed --out $RUNS/mlp-explore-s$seed.jsonl \
        "${eighth_floor[@]}" --candidate "blend0=preset:all-layers,epochs:null,blend:0,input_prune:false" \
        --candidate "lmd0.5=preset:all-layers,epochs:null,lmd:0.5,input_prune:false" --candidate "lmd2=preset:all-layers,epochs:null,lmd:2,input_prune:false" \
        --candidate "lmd5=preset:all-layers,epochs:null,lmd:5,input_prune:false" \
        --candidate "all-lr03=preset:all-layers,epochs:null,norm_rule:false,lr:0.03,input_prune:false" \
        "${sixth_reference[@]}" "${sixth_paper[@]}"
    done
    ;;
  mlp-check)  # eighth round: two more MLPs (another attack each, a deeper and wider one), run once
    attack mlp-plain-blended blended --model small_mlp --model-kwarg depth=3 --width 512 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 24 --no-augment
    attack mlp-bn-badnets badnets --model small_mlp --model-kwarg norm=batch --model-kwarg depth=3 --width 512 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 25 --no-augment
    study $RUNS/mlp-plain-blended $RUNS/mlp-bn-badnets --final-only --out $RUNS/mlp-check.jsonl "${eighth_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    ;;
  mlp-rule)  # eighth round: a rule for models without convolution, on the four MLPs (development models now)
    for seed in 0 1 2; do
      study $RUNS/mlp-plain-badnets $RUNS/mlp-bn-blended $RUNS/mlp-plain-blended $RUNS/mlp-bn-badnets --final-only \
        --seed $seed --out $RUNS/mlp-rule-s$seed.jsonl "${eighth_floor[@]}" "${sixth_reference[@]}" \
        --candidate "ref-values=preset:all-layers,epochs:null,lmd:0.5,layers:auto,blend:0,lr:0.01,input_prune:false" \
        --candidate "head-lmd0.5=preset:all-layers,epochs:null,lmd:0.5,layers:auto,lr:0.03,input_prune:false" \
        --candidate "head-lmd1=preset:all-layers,epochs:null,lmd:1,layers:auto,lr:0.03,input_prune:false" \
        --candidate "ref-values-blend=preset:all-layers,epochs:null,lmd:0.5,layers:auto,lr:0.01,input_prune:false"
    done
    ;;
  mlp-rule-check)  # eighth round, once: the candidate rule for models without convolution on three new MLPs
    attack mlp-d1-badnets badnets --model small_mlp --model-kwarg depth=1 --width 1024 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 26 --no-augment
    attack mlp-bn-sig sig --model small_mlp --model-kwarg norm=batch --width 128 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 27 --no-augment --poison-rate 0.08
    attack mlp-d4-blended blended --model small_mlp --model-kwarg depth=4 --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 28 --no-augment
    for n in 3000 500; do
      study $RUNS/mlp-d1-badnets $RUNS/mlp-bn-sig $RUNS/mlp-d4-blended --final-only --count $n --out $RUNS/mlp-rule-check-$n.jsonl \
        "${eighth_floor[@]}" --candidate "ref-values=preset:all-layers,epochs:null,lmd:0.5,layers:auto,blend:0,lr:0.01,input_prune:false"
      # the second candidate, run once on the check after the first failed there
      study $RUNS/mlp-d1-badnets $RUNS/mlp-bn-sig $RUNS/mlp-d4-blended --final-only --count $n --out $RUNS/mlp-rule-check-$n.jsonl \
        --candidate "head-lmd0.5=preset:all-layers,epochs:null,lmd:0.5,layers:auto,lr:0.03,input_prune:false"
    done
    ;;
  ninth)  # ninth round: input pruning (the default's `input_prune`) against the eighth round's default, on the
    # seven MLPs: retain seeds 0-2 at 3,000 images, seed 0 at 500 and 1,000
    for seed in 0 1 2; do study $MLP7 --final-only --seed $seed --out $RUNS/ninth-s$seed.jsonl "${ninth_cands[@]}"; done
    for n in 500 1000; do study $MLP7 --final-only --count $n --out $RUNS/ninth-$n.jsonl "${ninth_cands[@]}"; done
    ;;
  ninth-diagnose)  # ninth round: how far each weight of the plain BadNets MLP turns under the eighth round's
    # default and with every weight given a noise warm start, and how often the retain images light the trigger's pixels
    RUN_DIR=$RUNS/mlp-plain-badnets $PY - <<'PY'
import math
import os

import torch

from distox.defenses import create
from distox.experiment import load_run
from distox.metrics import evaluate

run = load_run(os.environ["RUN_DIR"])
backdoor, retain = run.backdoor_test_set(), run.retain(count=3000, seed=0)
lit = (retain.x[:, 0, -3:, -3:] > 0).float().mean(0) * 100  # the 3×3 BadNets patch at 28×28
print(f"retain images lighting each trigger pixel: {lit.min():.2f}-{lit.max():.2f} %")
for label, opts in {"default (eighth round)": {"input_prune": False},
                    "noise warm start on every weight": {"input_prune": False, "norm_rule": False,
                                                         "init_layers": "selected", "init": "noise"}}.items():
    result = create("d3", preset="default", seed=0, **opts)(run.model, retain, device="cpu", progress=False)
    after = evaluate(result.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
    start = dict(run.model.named_parameters())
    turned = []
    for name, w in result.model.named_parameters():
        if name.endswith("weight") and w.dim() == 2:
            w0, w1 = start[name].detach().flatten(), w.detach().flatten()
            cos = float(w0 @ w1 / (w0.norm() * w1.norm()))
            turned.append(f"{name} {math.degrees(math.acos(max(-1.0, min(1.0, cos)))):.0f}°")
    print(f"{label}: ASR {after['asr']:.2f} %; turned: " + ", ".join(turned))
PY
    ;;
  ninth-alone)  # ninth round: input pruning alone (no D3 after it) on the seven MLPs and the check MLPs, seed 0
    RUN_DIRS="$MLP7 $MLPCHECK" $PY - <<'PY'
import os

from distox.defenses.input_prune import prune_inputs
from distox.experiment import load_run
from distox.metrics import evaluate

print("| model | inputs set aside | retain ACC | ACC change | ASR before | ASR after |\n|---|---|---|---|---|---|")
for run_dir in os.environ["RUN_DIRS"].split():
    run = load_run(run_dir)
    backdoor, retain = run.backdoor_test_set(), run.retain(count=3000, seed=0)
    before = evaluate(run.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
    report = prune_inputs(run.model, retain)  # run.model is edited in place
    after = evaluate(run.model, run.data.test.x, run.data.test.y, backdoor, device="cpu")
    print(f"| {os.path.basename(run_dir)} | {report['pruned']} of {report['features']} | {report['start_acc']:.2f} → "
          f"{report['acc']:.2f} | {after['acc'] - before['acc']:+.2f} | {before['asr']:.2f} | {after['asr']:.2f} |")
PY
    ;;
  ninth-light)  # ninth round, after `ninth`: with the inputs set aside, does a lighter D3 do on the seven MLPs?
    for seed in 0 1 2; do
      study $MLP7 --final-only --seed $seed --out $RUNS/ninth-light-s$seed.jsonl \
        --candidate "paper-prune=preset:paper,augment:false,input_prune:true" \
        --candidate "prune-blend0=preset:all-layers,epochs:null,blend:0"
    done
    ;;
  ninth-tolerance)  # ninth round: how much the pruning's one setting matters, its retain-accuracy tolerance (the
    # default: one standard error, about 0.55 points at 3,000 images), at 0.25 and 1.5 points, on the seven MLPs
    for seed in 0 1 2; do
      study $MLP7 --final-only --seed $seed --out $RUNS/ninth-tolerance-s$seed.jsonl \
        --candidate "prune-tol0.25=preset:all-layers,epochs:null,tolerance:0.25,min_tolerance:0" \
        --candidate "prune-tol1.5=preset:all-layers,epochs:null,tolerance:1.5"
    done
    ;;
  ninth-models)  # ninth round: four check MLPs trained after input pruning was chosen (other attacks and recipes)
    # WaNet did not implant in an MLP (7.55 % ASR): it stays here, out of the check, and SIG with augmented training replaced it
    attack mlp-wanet wanet --model small_mlp --width 512 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 29 --no-augment
    attack mlp-sig-aug sig --model small_mlp --model-kwarg depth=3 --width 256 --poison-rate 0.08 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 33
    attack mlp-bn-lf lf --model small_mlp --model-kwarg norm=batch --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 30 --no-augment
    attack mlp-badnets-aug badnets --model small_mlp --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 31
    attack mlp-bn-a2a-badnets badnets --model small_mlp --model-kwarg norm=batch --model-kwarg depth=3 --width 384 --mode all2all --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 32 --no-augment
    ;;
  ninth-check)  # ninth round, once: the default with and without input pruning, the faithful presets and FT-SAM on
    # the check MLPs (3,000 images, seeds 0-1; 500 and 1,000 at seed 0)
    for seed in 0 1; do
      study $MLPCHECK --final-only --seed $seed --out $RUNS/ninth-check-s$seed.jsonl "${ninth_cands[@]}"
    done
    study $MLPCHECK --final-only --out $RUNS/ninth-check-s0.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}" \
      "${sixth_ft_sam[@]}"
    for n in 500 1000; do study $MLPCHECK --final-only --count $n --out $RUNS/ninth-check-$n.jsonl "${ninth_cands[@]}"; done
    ;;
  lenet-models)  # ninth round: LeNet-5 (conv stages, then a Linear over the flattened map), without and with BatchNorm
    # (at lr 0.05 the LeNet without BatchNorm collapsed to chance, 10.25 %; its directory was removed and it was retrained at 0.01)
    attack lenet-badnets badnets --model lenet --epochs 10 --lr 0.01 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 34 --no-augment
    attack lenet-bn-badnets badnets --model lenet --model-kwarg norm=batch --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 35 --no-augment
    # after `lenet-explore`: the same two with Blended, whose trigger covers the image (`lenet-models blended`)
    if [ "${2:-}" = blended ]; then
      attack lenet-blended blended --model lenet --epochs 10 --lr 0.01 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 36 --no-augment
      attack lenet-bn-blended blended --model lenet --model-kwarg norm=batch --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 37 --no-augment
    fi
    ;;
  lenet)  # ninth round, once on the two LeNets: the default at seeds 0-2 and 500 / 1,000 images, the faithful presets
    # and FT-SAM at seed 0
    LENET="$RUNS/lenet-badnets $RUNS/lenet-bn-badnets"
    for seed in 0 1 2; do study $LENET --final-only --seed $seed --out $RUNS/lenet-s$seed.jsonl "${seventh_floor[@]}"; done
    study $LENET --final-only --out $RUNS/lenet-s0.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}" \
      "${sixth_ft_sam[@]}"
    for n in 500 1000; do study $LENET --final-only --count $n --out $RUNS/lenet-$n.jsonl "${seventh_floor[@]}"; done
    ;;
  lenet-blended)  # ninth round, once: the default, the faithful presets and the head-only distance on the Blended LeNets
    for seed in 0 1 2; do
      study $RUNS/lenet-blended $RUNS/lenet-bn-blended --final-only --seed $seed --out $RUNS/lenet-blended-s$seed.jsonl \
        "${seventh_floor[@]}" "${sixth_reference[@]}" "${sixth_paper[@]}" --candidate "head=preset:all-layers,epochs:null,layers:auto"
    done
    ;;
  lenet-explore)  # ninth round, after `lenet` (the default behind both faithful presets there): what costs the accuracy
    LENET="$RUNS/lenet-badnets $RUNS/lenet-bn-badnets"
    for seed in 0 1 2; do
      study $LENET --final-only --seed $seed --out $RUNS/lenet-explore-s$seed.jsonl \
        --candidate "bnfed=preset:all-layers,epochs:null,layers:batchnorm-fed" \
        --candidate "blend0=preset:all-layers,epochs:null,blend:0" --candidate "lr01=preset:all-layers,epochs:null,lr:0.01" \
        --candidate "angle=preset:all-layers,epochs:null,layer_weighting:angle"
    done
    for seed in 1 2; do study $LENET --final-only --seed $seed --out $RUNS/lenet-s$seed.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}"; done
    ;;
  tenth-models)  # tenth round: the two-conv network of PyTorch's MNIST example (dropout, a log-softmax output,
    # no normalisation; `tutorial_cnn`), a recipe the project had not used, with BadNets and Blended
    attack tutorial-badnets badnets --model tutorial_cnn --epochs 6 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 41 --no-augment
    attack tutorial-blended blended --model tutorial_cnn --epochs 6 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 42 --no-augment
    # after `tenth-lr` and `tenth-bn`, a third trigger (`tenth-models sig`, then `tenth-sig 0 1 2`). WaNet was
    # tried first and did not implant in 6 epochs (ASR 11.98 %, clean model 3.13 %), so SIG replaced it
    if [ "${2:-}" = wanet ]; then
      attack tutorial-wanet wanet --model tutorial_cnn --epochs 6 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 43 --no-augment
    fi
    if [ "${2:-}" = sig ]; then
      attack tutorial-sig sig --model tutorial_cnn --epochs 6 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 44 --no-augment --poison-rate 0.08
    fi
    # after `tenth-sig`: BadNets all-to-all (`tenth-models a2a`, then `tenth-a2a 0 1 2`)
    if [ "${2:-}" = a2a ]; then
      attack tutorial-a2a badnets --model tutorial_cnn --mode all2all --epochs 6 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 45 --no-augment
    fi
    ;;
  tenth-sig|tenth-a2a)  # tenth round, once: the default and the faithful presets on the SIG / all-to-all tutorial CNN
    for seed in ${@:2}; do
      study $RUNS/tutorial-${1#tenth-} --final-only --seed $seed --out $RUNS/tenth-${1#tenth-}-s$seed.jsonl \
        "${seventh_floor[@]}" "${sixth_reference[@]}" "${sixth_paper[@]}"
    done
    ;;
  tenth)  # tenth round, once (check: nothing was tuned on these models): the default, the faithful presets,
    # seeds 0-2 (`tenth 0 1` and `tenth 2` in two shells share two cores)
    for seed in ${@:2}; do
      study $RUNS/tutorial-badnets $RUNS/tutorial-blended --final-only --seed $seed --out $RUNS/tenth-s$seed.jsonl \
        "${seventh_floor[@]}" "${sixth_reference[@]}" "${sixth_paper[@]}"
    done
    ;;
  tenth-lr)  # tenth round: without BatchNorm, the restarted classifier at lr 0.03 and the rest at 0.01
    # (`classifier_lr`), against the rule's 0.03 for everything; `tenth-lr dev SEEDS` (the models the
    # default's numbers exist for: shipped-s*, lenet-*), then `tenth-lr check SEEDS` once
    dev_or_check tenth-lr "$NOBN $RUNS/lenet-badnets $RUNS/lenet-blended" \
      "$RUNS/tutorial-badnets $RUNS/tutorial-blended $RUNS/vit-blended $RUNS/cnn-plain-badnets-aug $RUNS/cnn-convhead-plain-blended" \
      "split-lr=preset:all-layers,epochs:null,lr:0.01,classifier_lr:0.03" "${@:2}"
    ;;
  tenth-bn)  # tenth round: BatchNorm's running statistics re-estimated on the plain retain images after
    # training (`bn_recalibrate`; the overlay trains them on blended images); `tenth-bn dev SEEDS` on the
    # development models (the default's own cells: shipped-s*), then `tenth-bn check SEEDS` once
    dev_or_check tenth-bn "$DEV" "$CHECK $NEW" "recal=preset:all-layers,epochs:null,bn_recalibrate:true" "${@:2}"
    ;;
  eleventh)  # eleventh round: the classifier's warm start read off the retain set (`init: means`, the centred
    # class means of its input) against the random start of the default as shipped; `eleventh dev SEEDS`
    # (the Blended CNN and VGG, the WaNet PreAct-ResNet, the plain and GroupNorm CNNs), then `eleventh check SEEDS`
    # once (the check part's BatchNorm models, the ViT and the two tutorial CNNs); `eleventh 500 SEEDS`: the
    # development models with 500 retain images
    if [ "$2" = 500 ]; then
      for seed in "${@:3}"; do
        for candidate in "floor600=preset:all-layers,epochs:null" "means=preset:all-layers,epochs:null,init:means"; do
          study $DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets --final-only --count 500 --seed $seed \
            --out $RUNS/eleventh-500-s$seed.jsonl --candidate "$candidate"
        done
      done
      exit 0
    fi
    for seed in "${@:3}"; do
      dev_or_check eleventh "$DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets" \
        "$CHECK $RUNS/tutorial-badnets $RUNS/tutorial-blended" "floor600=preset:all-layers,epochs:null" "$2" "$seed"
      dev_or_check eleventh "$DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets" \
        "$CHECK $RUNS/tutorial-badnets $RUNS/tutorial-blended" "means=preset:all-layers,epochs:null,init:means" "$2" "$seed"
    done
    ;;
  twelfth-models)  # twelfth round: check models trained with recipes the study never had, after the eleventh
    # round (nothing was tuned on them): targets other than 0, poison rates of 2-5 %, larger learning rates,
    # two torchvision architectures new to the study; `twelfth-models a` and `twelfth-models b` side by side
    if [ "${2:-a}" = a ]; then
      attack effnet-sig sig --model torchvision:efficientnet_b0 --epochs 6 --lr 0.05 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 51 --target 3 --poison-rate 0.05
      # the EfficientNet-B0 under-trained in 6 epochs (ACC 70.05, its clean model 59.00) and SIG did not implant
      # (ASR 20.40 %), so it is not a study model; MobileNetV3-Large with SIG took its place
      attack mnv3l-sig sig --model torchvision:mobilenet_v3_large --epochs 8 --lr 0.02 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 54 --target 3 --poison-rate 0.05
    fi
    if [ "${2:-b}" = b ]; then
      attack mnv2-badnets badnets --model torchvision:mobilenet_v2 --epochs 8 --lr 0.02 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 52 --target 7 --poison-rate 0.02 --no-augment
      attack vgg-blended-t5 blended --model small_vgg --width 16 --epochs 10 --lr 0.05 --batch-size 256 --train-subset 20000 --test-subset 2000 --seed 53 --target 5 --poison-rate 0.03
    fi
    ;;
  twelfth)  # twelfth round, once on those three: `twelfth 3000` the default (retain seeds 0 and 1), the faithful
    # presets and FT-SAM (seed 0); `twelfth 500` and `twelfth 1000` the default with fewer images (seed 0)
    case ${2:-3000} in
      3000)
        study $TWELFTH --final-only --out $RUNS/twelfth-3000.jsonl "${seventh_floor[@]}" \
          "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
        study $TWELFTH --final-only --seed 1 --out $RUNS/twelfth-3000-s1.jsonl "${seventh_floor[@]}" ;;
      500|1000) study $TWELFTH --final-only --count $2 --out $RUNS/twelfth-$2.jsonl "${seventh_floor[@]}" ;;
      *) echo "twelfth takes 3000, 500 or 1000; got '$2'" >&2; exit 2 ;;
    esac
    ;;
  twelfth-diagnose)  # twelfth round, after `twelfth` (the default was not changed after it): where the default's
    # accuracy goes on the MobileNetV2 BadNets (seed 0): the distance on the classifier only, no overlay, no
    # warm start, and plain fine-tuning with and without the overlay (the accuracy 3,000 images keep)
    study $RUNS/mnv2-badnets --final-only --out $RUNS/twelfth-diagnose.jsonl \
      --candidate "head-only=preset:all-layers,epochs:null,layers:auto" --candidate "no-blend=preset:all-layers,epochs:null,blend:0" \
      --candidate "no-restart=preset:all-layers,epochs:null,init:near" --candidate "ft=method:ft,augment:false" \
      --candidate "ft-blend=method:ft,augment:false,blend:0.3"
    # and on the three: is the cost under-training? The default at twice its epochs (24)
    study $TWELFTH --final-only --out $RUNS/twelfth-diagnose.jsonl --candidate "24ep=preset:all-layers,epochs:24"
    ;;
  twelfth-where)  # twelfth round, after it: on the BatchNorm models, does the distance on the final classifier
    # alone (the `paper` preset) remove the backdoor where the default's all-layer distance does? Seed 0, 3,000
    # images; `twelfth-where dev` and `twelfth-where check` side by side (the twelfth round's models have it)
    case ${2:-} in
      dev) study $DEV --final-only --out $RUNS/twelfth-where-dev.jsonl "${sixth_paper[@]}" ;;
      check) study $RUNS/rn18-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug $RUNS/vgg-a2a-badnets --final-only \
               --out $RUNS/twelfth-where-check.jsonl "${sixth_paper[@]}" ;;
      *) echo "twelfth-where takes dev or check; got '${2:-}'" >&2; exit 2 ;;
    esac
    ;;
  eleventh-orth)  # eleventh round, after `eleventh`: the class means' part at right angles to the suspect classifier
    # (`init: means-orthogonal`, as far from it as the random start), development models, `eleventh-orth SEEDS`
    for seed in "${@:2}"; do
      study $DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets --final-only --seed $seed --out $RUNS/eleventh-orth-s$seed.jsonl \
        --candidate "means-orthogonal=preset:all-layers,epochs:null,init:means-orthogonal"
    done
    ;;
  eleventh-warmup)  # eleventh round, last: two epochs training only the restarted classifier (features and
    # BatchNorm statistics fixed) before D3 (`head_warmup: 2`); `eleventh-warmup dev SEEDS`, then `... check 0` once
    dev_or_check eleventh-warmup "$DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets" \
      "$CHECK $RUNS/tutorial-badnets $RUNS/tutorial-blended" "warmup2=preset:all-layers,epochs:null,head_warmup:2" "${@:2}"
    ;;
  eleventh-demo)  # eleventh round: the README demo with the class-means start
    demo_table "D3 (demo budget: 60 epochs)" '{"default": {}, "init means": {"init": "means"}}'
    ;;
  thirteenth-uap)  # thirteenth round: a trigger-free test of where a backdoor lives. Per class, a targeted universal
    # perturbation (L-inf 0.05 and 0.1, 20 signed-gradient steps on 256 retain images of the other classes) is fitted on
    # the suspect; its success on 512 other retain images is measured on the suspect and, transferred unchanged, on the
    # model after the classifier-only `paper` preset (seed 0, 3,000 images). `thirteenth-uap OUT.jsonl RUN_DIR...`
    $PY - "${@:2}" <<'PY'
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from d3_probes import append, fit_uap, pending, records, uap_success as success  # noqa: E402
from distox.defenses import create  # noqa: E402
from distox.experiment import load_run  # noqa: E402
from distox.metrics import evaluate  # noqa: E402

torch.set_num_threads(1)


out = Path(sys.argv[1])
for d, _ in pending(out, sys.argv[2:]):
    run = load_run(Path(d))
    retain, backdoor = run.retain(count=3000, seed=0), run.backdoor_test_set()
    suspect = run.model.eval()
    paper = create("d3", preset="paper", augment=False, epochs=12, batch_size=32, seed=0)(
        suspect, retain, device="cpu", progress=False).model.eval()
    fit, held = (retain.x[:1500], retain.y[:1500]), (retain.x[1500:], retain.y[1500:])
    line = {"run": str(Path(d).resolve()), "target": int(backdoor.target[0]), "all2all": run.attack.mode != "all2one",
            "paper": evaluate(paper, run.data.test.x, run.data.test.y, backdoor, device="cpu")}
    for eps in (0.05, 0.1):
        torch.manual_seed(0)
        deltas = [fit_uap(suspect, *fit, c, eps) for c in range(10)]
        line[f"suspect_{eps}"] = [success(suspect, *held, c, deltas[c]) for c in range(10)]
        line[f"transfer_{eps}"] = [success(paper, *held, c, deltas[c]) for c in range(10)]
    append(out, line)
print("| model | target | `paper` ASR | suspect at 0.05: strongest class (its success; the target's) "
      "| target at 0.1: on the suspect → transferred | class with the lowest transfer ratio at 0.1 |")
print("|---|---|---|---|---|---|")
for r in records(out):
    t, s05, s1, t1 = r["target"], r["suspect_0.05"], r["suspect_0.1"], r["transfer_0.1"]
    top = max(range(10), key=lambda c: s05[c])
    ratios = [t1[c] / s1[c] if s1[c] >= 20 else float("inf") for c in range(10)]  # classes the suspect reaches
    low = min(range(10), key=lambda c: ratios[c])
    target = "all-to-all" if r["all2all"] else t
    print(f"| {Path(r['run']).name} | {target} | {r['paper']['asr']:.2f} | {top} ({s05[top]:.1f}; {s05[t]:.1f}) | "
          f"{s1[t]:.1f} → {t1[t]:.1f} | {low} ({ratios[low]:.2f}) |")
PY
    ;;
  thirteenth-refit)  # thirteenth round, after the probe: is the default's accuracy lost in the features or in the
    # classifier? The best linear classifier on the retain images' features (multinomial logistic regression from zero,
    # full-batch L-BFGS, L2 0 / 1e-4 / 1e-3) of the default's model and of the suspect (seed 0, 3,000 images).
    # `thirteenth-refit OUT.jsonl RUN_DIR...`
    $PY - "${@:2}" <<'PY'
import copy
import json
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, "benchmarks")
from d3_probes import append, pending, records  # noqa: E402
from distox.bench.summary import asr_floor  # noqa: E402
from distox.defenses import create  # noqa: E402
from distox.defenses.d3 import linear_classifier  # noqa: E402
from distox.defenses.probe import layer_input  # noqa: E402
from distox.experiment import load_run  # noqa: E402
from distox.metrics import evaluate  # noqa: E402
from distox.models.selection import owning_module  # noqa: E402

torch.set_num_threads(1)
DECAYS = (0.0, 1e-4, 1e-3)


def features(model, layer, x):
    with torch.no_grad():
        return torch.cat([layer_input(model.eval(), layer, x[i:i + 500]).flatten(1) for i in range(0, len(x), 500)])


def linear_head(f, y, k, decay):
    """Multinomial logistic regression from zero with an L2 penalty, full-batch L-BFGS."""
    w, b = torch.zeros(k, f.shape[1], requires_grad=True), torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(f @ w.T + b, y) + decay * w.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()


out = Path(sys.argv[1])
for d, _ in pending(out, sys.argv[2:]):
    run = load_run(Path(d))
    retain, backdoor, test = run.retain(count=3000, seed=0), run.backdoor_test_set(), (run.data.test.x, run.data.test.y)
    suspect = run.model.eval()
    default = create("d3", preset="default", epochs=12, batch_size=32, seed=0)(
        suspect, retain, device="cpu", progress=False).model.eval()
    name = next(iter(linear_classifier(suspect, retain.x[:1])))
    line = {"run": str(Path(d).resolve()), "suspect": evaluate(suspect, *test, backdoor, device="cpu"),
            "default": evaluate(default, *test, backdoor, device="cpu"),
            "floor": asr_floor(json.loads((Path(d) / "metrics.json").read_text())["clean_asr"])}
    for tag, model in (("suspect", suspect), ("default", default)):
        f = features(model, owning_module(model, name), retain.x)
        for decay in DECAYS:
            w, b = linear_head(f, retain.y, int(retain.y.max()) + 1, decay)
            probe = copy.deepcopy(model)
            layer = owning_module(probe, name)
            with torch.no_grad():
                layer.weight.copy_(w.view_as(layer.weight))
                if layer.bias is not None:
                    layer.bias.copy_(b)
            line[f"{tag}_features_l2_{decay:g}"] = evaluate(probe, *test, backdoor, device="cpu")
    append(out, line)
cols = [f"{tag}_features_l2_{decay:g}" for tag in ("default", "suspect") for decay in DECAYS]
print("| model | default | " + " | ".join(f"linear on the {c.split('_')[0]}'s features, L2 {c.split('_')[-1]}"
                                        for c in cols) + " |")
print("|---" * (2 + len(cols)) + "|")
for r in records(out):
    cell = lambda m: f"{m['acc'] - r['suspect']['acc']:+.2f} / {m['asr']:.2f}{' ✗' if m['asr'] > r['floor'] else ''}"
    print(f"| {Path(r['run']).name} | {cell(r['default'])} | " + " | ".join(cell(r[c]) for c in cols) + " |")
PY
    ;;
  thirteenth-depth)  # thirteenth round, last: the distance over the deeper or the shallower half of the weighted
    # layers only (`layers: last:0.5`, `first:0.5` with the classifier), development models, `thirteenth-depth SEEDS`
    for seed in "${@:2}"; do
      study $DEV --final-only --seed "$seed" --out $RUNS/thirteenth-depth-dev-s$seed.jsonl \
        --candidate "last50=preset:all-layers,epochs:null,layers:last:0.5" \
        --candidate "first50=preset:all-layers,epochs:null,layers:first:0.5"
    done
    ;;
  fourteenth-models)  # fourteenth round: two more check models, trained after the thirteenth round (nothing was
    # tuned on them), attacks and architectures new to the study at 1x28x28: torchvision MnasNet-0.5 (BatchNorm,
    # depthwise convs) with LF, and the paper's VGG19-BN (a quarter of its width; three Linears in its classifier)
    # with WaNet; `fourteenth-models a` and `fourteenth-models b` side by side
    if [ "${2:-a}" = a ]; then
      # not finished: LF's trigger search (a surrogate and per-image DeepFool) ran 28 min on one core before the
      # MnasNet's own training began, and was stopped to leave the session time to run the defenses on the other
      attack mnasnet-lf lf --model torchvision:mnasnet0_5 --epochs 8 --lr 0.02 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 55 --target 2 --poison-rate 0.05
    fi
    if [ "${2:-b}" = b ]; then
      attack squeezenet-badnets badnets --model torchvision:squeezenet1_1 --epochs 10 --lr 0.01 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 56 --target 9 --poison-rate 0.03
      # SqueezeNet-1.1 (no normalisation) did not train at all at lr 0.01 (ACC 8.85 %, its clean model too): not a
      # study model; VGG19-BN with WaNet took its place
      attack vgg19-wanet wanet --model vgg19_bn --width 0.25 --epochs 12 --lr 0.03 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 57 --target 4 --poison-rate 0.1
    fi
    ;;
  fourteenth)  # fourteenth round, once on the VGG19-BN: the default, the faithful presets and FT-SAM (seed 0, 3,000
    # images); the default at retain seed 1, and with 500 images (seed 0)
    study $RUNS/vgg19-wanet --final-only --out $RUNS/fourteenth-3000.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    study $RUNS/vgg19-wanet --final-only --seed 1 --out $RUNS/fourteenth-3000-s1.jsonl "${seventh_floor[@]}"
    study $RUNS/vgg19-wanet --final-only --count 500 --out $RUNS/fourteenth-500.jsonl "${seventh_floor[@]}"
    ;;
  fifteenth-sam)  # fifteenth round: sharpness-aware steps inside D3 (`sam_rho`, ASAM with T = |w| as FT-SAM, the
    # ascent on the clean loss alone), development models, `fifteenth-sam SEEDS`
    for seed in "${@:2}"; do
      study $DEV --final-only --seed "$seed" --out $RUNS/fifteenth-sam-dev-s$seed.jsonl \
        --candidate "sam2=preset:all-layers,epochs:null,sam_rho:2.0" --candidate "sam05=preset:all-layers,epochs:null,sam_rho:0.5"
    done
    ;;
  fifteenth-fisher)  # fifteenth round: the distance weighed by the suspect's clean-data Fisher information
    # (`layer_weighting: fisher`), development models, `fifteenth-fisher SEEDS`
    for seed in "${@:2}"; do
      study $DEV --final-only --seed "$seed" --out $RUNS/fifteenth-fisher-dev-s$seed.jsonl \
        --candidate "fisher=preset:all-layers,epochs:null,layer_weighting:fisher"
    done
    ;;
  fifteenth-models)  # fifteenth round: check models trained after the round's candidates had failed (nothing was
    # tuned on them), architectures new to the study: torchvision MnasNet-0.5 (BatchNorm, depthwise convs) with
    # BadNets, target 2, and GoogLeNet (inception modules, BatchNorm; without its auxiliary heads) with Blended,
    # target 8; `fifteenth-models a` and `fifteenth-models b` side by side
    if [ "${2:-a}" = a ]; then
      attack mnasnet-badnets badnets --model torchvision:mnasnet0_5 --epochs 8 --lr 0.02 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 58 --target 2 --poison-rate 0.05
    fi
    if [ "${2:-b}" = b ]; then
      attack googlenet-blended blended --model torchvision:googlenet --epochs 6 --lr 0.02 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 59 --target 8 --poison-rate 0.05
    fi
    ;;
  sixteenth-models)  # sixteenth round: check models trained with other recipes than every study model (SGD, hard
    # labels, weight decay 5e-4, a few epochs): label smoothing, Adam, no weight decay, 40 epochs on 10,000 images;
    # two trained 30 epochs on 6,000 images (d, e); label smoothing on two models without BatchNorm (f);
    # `sixteenth-models a` … `f` side by side
    if [ "${2:-a}" = a ]; then
      attack vgg-blended-ls blended --model small_vgg --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 60 --label-smoothing 0.1
      attack prn-wanet-adam wanet --model preactresnet18 --width 0.125 --epochs 6 --train-subset 30000 --test-subset 2000 --seed 61 --target 4 --optimizer adam --lr 0.001 --weight-decay 0
    fi
    if [ "${2:-b}" = b ]; then
      attack cnn-blended-ls-nowd blended --model small_cnn --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 62 --target 6 --label-smoothing 0.2 --weight-decay 0
      attack rn18-badnets-adam badnets --model torchvision:resnet18 --epochs 3 --train-subset 20000 --test-subset 2000 --seed 63 --target 3 --optimizer adam --lr 0.001
    fi
    if [ "${2:-c}" = c ]; then  # 40 epochs on 10,000 images without weight decay
      attack cnn-blended-long blended --model small_cnn --width 16 --epochs 40 --batch-size 64 --no-augment --train-subset 10000 --test-subset 2000 --seed 64 --target 2 --weight-decay 0 --lr 0.02
    fi
    if [ "${2:-d}" = d ]; then  # trained until it fits its training images, from which the retain images are drawn
      attack vgg-blended-fit blended --model small_vgg --width 16 --epochs 30 --batch-size 64 --no-augment --train-subset 6000 --test-subset 2000 --seed 66 --target 9 --lr 0.02
    fi
    if [ "${2:-e}" = e ]; then
      attack cnn-badnets-fit badnets --model small_cnn --width 32 --epochs 30 --batch-size 64 --no-augment --train-subset 6000 --test-subset 2000 --seed 67 --target 7 --lr 0.02
    fi
    if [ "${2:-f}" = f ]; then  # label smoothing where the default keeps the distance on the classifier (no BatchNorm)
      attack vit-blended-ls blended --model small_vit --epochs 8 --batch-size 64 --lr 0.03 --no-augment --train-subset 20000 --test-subset 2000 --seed 68 --target 1 --label-smoothing 0.1
      attack cnn-plain-blended-ls blended --model small_cnn --width 16 --model-kwarg norm=none --epochs 6 --batch-size 64 --lr 0.03 --no-augment --train-subset 30000 --test-subset 2000 --seed 69 --target 5 --label-smoothing 0.1
    fi
    ;;
  fifteenth)  # fifteenth round, once on each: the default (seeds 0, 1), the faithful presets and FT-SAM (seed 0,
    # 3,000 images); the default with 500 images (seed 0); `fifteenth RUN_DIR...`
    study "${@:2}" --final-only --out $RUNS/fifteenth-3000.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    study "${@:2}" --final-only --seed 1 --out $RUNS/fifteenth-3000-s1.jsonl "${seventh_floor[@]}"
    study "${@:2}" --final-only --count 500 --out $RUNS/fifteenth-500.jsonl "${seventh_floor[@]}"
    ;;
  sixteenth-sets)  # sixteenth round: the default with its logits at their retain temperature on the earlier sets,
    # beside the default's lines already there: the eleventh round's development part (seeds 0 and 1) and check part,
    # the twelfth, fourteenth and fifteenth rounds' check models; `sixteenth-sets a` and `b` side by side
    local_scaled="logit-scaled=preset:all-layers,epochs:null,logit_scale:true"
    if [ "${2:-a}" = a ]; then
      dev_or_check eleventh "$DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets" "" "$local_scaled" dev 0 1
      study $RUNS/vgg19-wanet --final-only --out $RUNS/fourteenth-3000.jsonl --candidate "$local_scaled"
      study $RUNS/googlenet-blended --final-only --out $RUNS/fifteenth-3000.jsonl --candidate "$local_scaled"
    fi
    if [ "${2:-b}" = b ]; then
      dev_or_check eleventh "" "$CHECK $RUNS/tutorial-badnets $RUNS/tutorial-blended" "$local_scaled" check 0
      study $RUNS/mnv2-badnets $RUNS/vgg-blended-t5 $RUNS/mnv3l-sig --final-only --out $RUNS/twelfth-3000.jsonl \
        --candidate "$local_scaled"
    fi
    ;;
  seventeenth-models)  # seventeenth round: check models of an architecture the study never had, a hybrid ViT
    # (BatchNorm conv stem, PyTorch's nn.TransformerEncoder: attention in nn.MultiheadAttention), trained after the
    # round's averaging candidates (nothing was tuned on them); `seventeenth-models a` and `b` side by side
    if [ "${2:-a}" = a ]; then
      attack hybrid-blended blended --model hybrid_vit --epochs 8 --batch-size 64 --lr 0.03 --no-augment --train-subset 20000 --test-subset 2000 --seed 70
    fi
    if [ "${2:-b}" = b ]; then
      attack hybrid-badnets badnets --model hybrid_vit --epochs 8 --batch-size 64 --lr 0.03 --no-augment --train-subset 20000 --test-subset 2000 --seed 71 --target 8
    fi
    # two more, trained after the round's floor rule was chosen (`c` and `d` side by side)
    if [ "${2:-c}" = c ]; then
      attack hybrid-sig sig --model hybrid_vit --epochs 8 --batch-size 64 --lr 0.03 --no-augment --train-subset 20000 --test-subset 2000 --seed 72 --target 2
    fi
    if [ "${2:-d}" = d ]; then
      attack hybrid-wanet wanet --model hybrid_vit --epochs 8 --batch-size 64 --lr 0.03 --no-augment --train-subset 20000 --test-subset 2000 --seed 73 --target 5
    fi
    # two models without BatchNorm of families the floor check did not have (an MLP, a LeNet-5), trained after the
    # floor rule was shipped (`e` and `f` side by side)
    if [ "${2:-e}" = e ]; then
      attack mlp-badnets-17 badnets --model small_mlp --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 74 --target 4 --no-augment
    fi
    if [ "${2:-f}" = f ]; then
      attack lenet-blended-17 blended --model lenet --epochs 10 --lr 0.01 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 75 --target 7 --no-augment
    fi
    # four more without BatchNorm, after those two went against the floor rule (`g` and `h` side by side)
    if [ "${2:-g}" = g ]; then
      attack mlp-blended-17 blended --model small_mlp --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 76 --target 1 --no-augment
      attack lenet-badnets-17 badnets --model lenet --epochs 10 --lr 0.01 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 78 --target 6 --no-augment
    fi
    if [ "${2:-h}" = h ]; then
      attack mlp-sig-17 sig --model small_mlp --width 256 --epochs 10 --lr 0.05 --batch-size 64 --train-subset 30000 --test-subset 2000 --seed 77 --target 3 --poison-rate 0.08 --no-augment
      attack cnn-plain-sig-17 sig --model small_cnn --width 16 --model-kwarg norm=none --epochs 6 --batch-size 64 --lr 0.03 --no-augment --train-subset 30000 --test-subset 2000 --seed 79 --target 9
    fi
    ;;
  seventeenth)  # seventeenth round, once on each hybrid ViT: the default and the default as it was before the round
    # (its distance without nn.MultiheadAttention's in_proj_weight; seeds 0, 1), the faithful presets and FT-SAM
    # (seed 0, 3,000 images); the default with 500 images (seed 0); `seventeenth RUN_DIR...`
    study "${@:2}" --final-only --out $RUNS/seventeenth-3000.jsonl "${seventh_floor[@]}" "${seventeenth_linear[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    study "${@:2}" --final-only --seed 1 --out $RUNS/seventeenth-3000-s1.jsonl "${seventh_floor[@]}" "${seventeenth_linear[@]}"
    study "${@:2}" --final-only --count 500 --out $RUNS/seventeenth-500.jsonl "${seventh_floor[@]}"
    ;;
  seventeenth-sizes)  # seventeenth round, after `seventeenth`: the default with 500 images at retain seed 1 and
    # with 1,000 at seed 0, on the hybrid ViTs; `seventeenth-sizes RUN_DIR...`
    study "${@:2}" --final-only --count 500 --seed 1 --out $RUNS/seventeenth-500-s1.jsonl "${seventh_floor[@]}"
    study "${@:2}" --final-only --count 1000 --out $RUNS/seventeenth-1000.jsonl "${seventh_floor[@]}"
    ;;
  seventeenth-diagnose)  # seventeenth round, after `seventeenth-sizes` (a diagnosis on a check model: nothing
    # changes after it): on the hybrid BadNets, which the default clears with 3,000 images and not with 500 or 1,000,
    # do the steps or the images decide? 1,000 images with the steps of a 3,000-image run (1,128) and more; 3,000
    # images with half the steps; `seventeenth-diagnose RUN_DIR...`
    study "${@:2}" --final-only --count 1000 --out $RUNS/seventeenth-diagnose-1000.jsonl \
      --candidate "steps1128=preset:all-layers,epochs:null,min_steps:1128" --candidate "steps2256=preset:all-layers,epochs:null,min_steps:2256"
    study "${@:2}" --final-only --out $RUNS/seventeenth-diagnose-3000.jsonl --candidate "epochs6=preset:all-layers,epochs:6"
    ;;
  seventeenth-floor)  # seventeenth round, after `seventeenth-diagnose`: a steps floor of 1,128 (the steps the default
    # makes on 3,000 images: no run makes fewer) against the shipped 600, the eleventh round's development models with
    # 500 and 1,000 retain images; `seventeenth-floor SEEDS`
    for seed in "${@:2}"; do
      for n in 500 1000; do
        study $DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets --final-only --count $n --seed "$seed" \
          --out $RUNS/seventeenth-floor-$n-s$seed.jsonl "${seventh_floor[@]}" "${seventeenth_floor[@]}"
      done
    done
    ;;
  seventeenth-floor-check)  # seventeenth round, after `seventeenth-floor` (where the models without BatchNorm, on the
    # classifier-only path, kept 1.6-3.9 points more in every cell): the same two candidates once on the check models
    # without BatchNorm (the tutorial CNNs, the ViT Blended, the label-smoothed ViT and CNN without normalisation),
    # 500 and 1,000 retain images, seeds 0 and 1
    for seed in 0 1; do
      for n in 500 1000; do
        study $RUNS/tutorial-badnets $RUNS/tutorial-blended $RUNS/vit-blended $RUNS/vit-blended-ls $RUNS/cnn-plain-blended-ls \
          --final-only --count $n --seed $seed --out $RUNS/seventeenth-floor-check-$n-s$seed.jsonl "${seventh_floor[@]}" \
          "${seventeenth_floor[@]}"
      done
    done
    ;;
  seventeenth-floor-late)  # seventeenth round, last: the floor of 600 against the shipped 1,128 on the models
    # without BatchNorm trained after it was shipped (e, f; then g, h), 500 and 1,000 images, seeds 0 and 1;
    # `seventeenth-floor-late SEED`
    for n in 500 1000; do
      study $RUNS/mlp-badnets-17 $RUNS/lenet-blended-17 $RUNS/mlp-blended-17 $RUNS/lenet-badnets-17 $RUNS/mlp-sig-17 \
        $RUNS/cnn-plain-sig-17 --final-only --count $n --seed "$2" \
        --out $RUNS/seventeenth-floor-late-$n-s$2.jsonl --candidate "floor600=preset:all-layers,epochs:null,min_steps:600" \
        --candidate "shipped=preset:all-layers,epochs:null"
    done
    ;;
  seventeenth-late)  # seventeenth round, last: the six late models without BatchNorm at 3,000 images, once: the
    # default (seeds 0, 1), the faithful presets and FT-SAM (seed 0); `seventeenth-late RUN_DIR...`
    study "${@:2}" --final-only --out $RUNS/seventeenth-late-3000.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    study "${@:2}" --final-only --seed 1 --out $RUNS/seventeenth-late-3000-s1.jsonl "${seventh_floor[@]}"
    ;;
  eighteenth-diagnose)  # eighteenth round, first: where the LeNet-5 BadNets backdoor (seventeenth-late) lives, seeds 0, 1:
    # the distance over the three head Linears (with only the classifier restarted, and with all three), over every
    # weight, the default at lr 0.01, and the two last head Linears restarted and in the distance (not the first)
    for seed in 0 1; do
      study $RUNS/lenet-badnets-17 --final-only --seed $seed --out $RUNS/eighteenth-diagnose-s$seed.jsonl \
        --candidate 'mlphead=preset:all-layers,epochs:null,layers:["net.hidden.*","net.fc"]' \
        --candidate 'mlphead-init=preset:all-layers,epochs:null,layers:["net.hidden.*","net.fc"],init_layers:selected' \
        --candidate 'all=preset:all-layers,epochs:null,layers:all' --candidate 'lr01=preset:all-layers,epochs:null,lr:0.01' \
        --candidate 'tail2=preset:all-layers,epochs:null,layers:["net.hidden.2","net.fc"],init_layers:selected'
    done
    ;;
  eighteenth-head-bn)  # eighteenth round, an exploration: the whole fully connected head restarted (init_layers=linear-head)
    # on BatchNorm models whose head has several Linears, 3,000 images; `eighteenth-head-bn SEED` (the default's own
    # lines on the VGG19-BN and the MobileNetV3 are the fourteenth's and the twelfth's)
    study $RUNS/lenet-bn-badnets $RUNS/lenet-bn-blended --final-only --seed "$2" --out $RUNS/eighteenth-head-bn-s$2.jsonl \
      "${seventh_floor[@]}" --candidate "head-init=preset:all-layers,epochs:null,init_layers:linear-head"
    study $RUNS/vgg19-wanet $RUNS/mnv3l-sig --final-only --seed "$2" --out $RUNS/eighteenth-head-bn-s$2.jsonl \
      --candidate "head-init=preset:all-layers,epochs:null,init_layers:linear-head"
    ;;
  nineteenth-user-models)  # nineteenth round: three models as a user brings them (benchmarks/user_models.py: models,
    # triggers and training loops in plain PyTorch, nothing from distox), each with its clean twin, trained after
    # everything above (nothing tuned on them); `nineteenth-user-models a` (the ResNet-18, 13 min) and `b` side by side
    if [ "${2:-a}" = a ]; then user_models train resnet18; fi
    if [ "${2:-b}" = b ]; then user_models train tutorial-lenet keras-cnn; fi
    # after the round's candidates: the two recipes with each other's trigger, `c` (the ResNet-18) and `d` side by side
    if [ "${2:-}" = c ]; then user_models train resnet18-patch; fi
    if [ "${2:-}" = d ]; then user_models train keras-cnn-x; fi
    ;;
  nineteenth-user)  # nineteenth round, once on each: `distox.purify` with the default at 800 (the issue's example),
    # 3,000 and 4,000 images, seeds 0 and 1 at 800 and 3,000, `epochs=5` at 800; the faithful presets at the study's
    # 12 epochs of batch 32; `nineteenth-user MODEL...`
    for n in 800 3000; do for s in 0 1; do user_models purify --preset all-layers "${@:2}" --images $n --seed $s; done; done
    user_models purify --preset all-layers "${@:2}" --images 4000
    user_models purify --preset all-layers "${@:2}" --images 800 --epochs 5
    for s in 0 1; do user_models purify "${@:2}" --images 3000 --preset paper --epochs 12 --params "$TWELVE" --label paper-12 --seed $s; done
    user_models purify "${@:2}" --images 3000 --preset reference --epochs 12 --params "$TWELVE" --label reference-12
    ;;
  nineteenth-user-shipped)  # nineteenth round: the faithful presets as distox ships them (100 epochs at batch 256 with
    # augmentation) and FT-SAM, on the two small user models (on the ResNet-18 each would take about 40 min)
    user_models purify tutorial-lenet keras-cnn --images 3000 --preset paper
    user_models purify tutorial-lenet keras-cnn --images 3000 --preset reference
    user_models purify tutorial-lenet keras-cnn --images 800 --preset paper
    user_models purify tutorial-lenet keras-cnn --images 3000 --method ft-sam
    ;;
  nineteenth-user-explore)  # nineteenth round, after the runs above: what the default's own options change on the
    # user ResNet-18 (which it leaves at 21 %) and the Keras-style CNN (where it costs 4.5 points); 3,000 images, seed 0
    for c in 'angle={"layer_weighting": "angle"}' 'blend0={"blend": 0}' 'lr03={"lr": 0.03}' 'classifier-only={"layers": "auto"}' \
             'lmd40={"lmd": 40}' 'lmd5={"lmd": 5}' 'slow-features={"lr": 0.003, "classifier_lr": 0.01}'; do
      user_models purify --preset all-layers resnet18 --images 3000 --label "${c%%=*}" --params "${c#*=}"
    done
    for c in 'blend0={"blend": 0}' 'lr03={"lr": 0.03}' 'avg50={"average": 0.5}' 'lmd40={"lmd": 40}' 'lmd5={"lmd": 5}'; do
      user_models purify --preset all-layers keras-cnn --images 3000 --label "${c%%=*}" --params "${c#*=}"
    done
    user_models purify --preset all-layers keras-cnn --images 3000 --epochs 24 --label e24
    # last of the round (after nineteenth-user-swapped): 16 epochs, the steps 4,000 images make, on the two failing draws
    user_models purify --preset all-layers resnet18 --images 3000 --epochs 16 --label e16
    user_models purify --preset all-layers resnet18-patch --images 3000 --epochs 16 --seed 1 --label e16
    ;;
  nineteenth-candidates)  # nineteenth round, last, 3,000 images, seed 0, on the three user models and the dev models:
    # the default with the existing held-out λ rule (`lmd-auto`: of λ 0.5, 2 and 10, tried for 6 epochs on 80 % of the
    # retain images, the one that travels farthest while the other 20 % stay within 2 points), and with the final
    # classifier's distance counted 11 times (`classifier-x11`: its push as at λ ≤ 1, the other weights' at λ 10)
    auto='{"lmd": "auto", "auto": {"ladder": [0.5, 2, 10], "search_epochs": 6}}'
    user_models purify --preset all-layers resnet18 keras-cnn tutorial-lenet --images 3000 --params "$auto" --label lmd-auto
    user_models purify --preset all-layers resnet18 keras-cnn tutorial-lenet --images 3000 --params '{"classifier_weight": 11}' --label classifier-x11
    study $DEV --final-only --seed 0 --out $RUNS/nineteenth-auto-dev-s0.jsonl \
      --candidate 'lmd-auto=preset:all-layers,epochs:null,lmd:auto,auto:{"ladder":[0.5,2,10],"search_epochs":6}'
    study $DEV --final-only --seed 0 --out $RUNS/nineteenth-cw-dev-s0.jsonl \
      --candidate 'classifier-x11=preset:all-layers,epochs:null,classifier_weight:11'
    # the held-out λ rule on three check models (stopped there: it had chosen λ 10, the default's, on all six before)
    for r in vgg-badnets-aug vgg-a2a-badnets vgg-sam-blended; do
      study $RUNS/$r --final-only --seed 0 --out $RUNS/nineteenth-auto-check-s0.jsonl \
        --candidate 'lmd-auto=preset:all-layers,epochs:null,lmd:auto,auto:{"ladder":[0.5,2,10],"search_epochs":6}'
    done
    ;;
  nineteenth-user-swapped)  # nineteenth round, last, once on `resnet18-patch` and `keras-cnn-x`: the default at 3,000
    # images (seeds 0, 1) and 800, the faithful presets at the study's 12 epochs of batch 32
    for m in resnet18-patch keras-cnn-x; do
      for s in 0 1; do user_models purify --preset all-layers $m --images 3000 --seed $s; done
      user_models purify --preset all-layers $m --images 800
      user_models purify $m --images 3000 --preset reference --epochs 12 --params "$TWELVE" --label reference-12
      user_models purify $m --images 3000 --preset paper --epochs 12 --params "$TWELVE" --label paper-12
    done
    user_models purify keras-cnn-x --images 3000 --preset reference --epochs 12 --params "$TWELVE" --label reference-12 --seed 1
    ;;
  nineteenth-table)  # nineteenth round's tables
    user_models table
    ;;
  twentieth-eps)  # twentieth round: the default with ε set to the suspect's own mean cross-entropy on the retain images
    # (`eps="auto"`, distox.defenses.d3_auto) instead of 0.1, 3,000 images: the user models, then the dev part
    user_models purify --preset all-layers resnet18 keras-cnn tutorial-lenet keras-cnn-x --images 3000 --params '{"eps": "auto"}' --label eps-auto
    user_models purify --preset all-layers resnet18-patch --images 3000 --seed 1 --params '{"eps": "auto"}' --label eps-auto
    for s in 0 1; do
      study $DEV --final-only --seed $s --out $RUNS/twentieth-epsauto-dev-s$s.jsonl \
        --candidate 'eps-auto=preset:all-layers,epochs:null,eps:auto'
    done
    ;;
  twentieth-twice)  # twentieth round: the default run twice, as a user who purifies the purified model again (seed 0,
    # then seed 1 on its result, the same 3,000 retain images); `twentieth-twice a` and `b` side by side
    if [ "${2:-a}" = a ]; then
      $PY benchmarks/d3_probes.py twice $RUNS/twentieth-twice.jsonl $RUNS/tutorial-badnets $RUNS/tutorial-blended \
        $RUNS/lenet-badnets $RUNS/lenet-blended-17 $RUNS/lenet-wanet-18 $RUNS/mlp-blended-17 $RUNS/cnn-plain-blended \
        $RUNS/vit-blended $RUNS/hybrid-blended
    else
      user_models purify --preset all-layers tutorial-lenet keras-cnn keras-cnn-x resnet18-patch --images 3000 --then '{}' --label twice
      user_models purify --preset all-layers tutorial-lenet --images 3000 --seed 1 --then '{}' --label twice
      # what else brings it back on the tutorial LeNet: plain fine-tuning, and `reference` at 12 epochs
      user_models purify --preset all-layers tutorial-lenet --images 3000 --then '{"method": "ft", "epochs": 12, "batch_size": 32, "augment": false}' \
        --label then-ft
      user_models purify --preset all-layers tutorial-lenet --images 3000 \
        --then '{"preset": "reference", "epochs": 12, "batch_size": 32, "augment": false}' --label then-reference-12
      $PY benchmarks/d3_probes.py twice $RUNS/twentieth-twice.jsonl $RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 \
        $RUNS/prn-wanet
    fi
    ;;
  twentieth-depth)  # twentieth round, after twentieth-twice: does the backdoor stay out when a second run pushes the
    # classifier harder (`reference` at 12 epochs, seed 1, on the default's result)? On models without BatchNorm the
    # default's distance is the classifier's alone (the sixth round's rule); `b` runs the same after the all-layer
    # distance there instead (`norm_rule: false`); `twentieth-depth a` and `b` side by side
    ref='{"preset": "reference", "epochs": 12, "batch_size": 32, "augment": false}'
    nobn="$RUNS/tutorial-badnets $RUNS/lenet-blended-17 $RUNS/mlp-blended-17 $RUNS/cnn-plain-blended $RUNS/lenet-badnets"
    if [ "${2:-a}" = a ]; then
      $PY benchmarks/d3_probes.py twice $RUNS/twentieth-then-reference.jsonl $nobn $RUNS/cnn-blended-s1 \
        $RUNS/vgg-blended-s0 $RUNS/vit-blended --then "$ref"
      user_models purify --preset all-layers keras-cnn --images 3000 --then "$ref" --label then-reference-12
    else
      $PY benchmarks/d3_probes.py twice $RUNS/twentieth-alllayers-then-reference.jsonl $nobn $RUNS/vit-blended \
        --first '{"norm_rule": false}' --then "$ref"
      user_models purify --preset all-layers tutorial-lenet --images 3000 --params '{"norm_rule": false}' --then "$ref" \
        --label all-layers-then-reference-12
    fi
    ;;
  twentieth-resnet)  # twentieth round: the user ResNet-18 (the default leaves 21 %) with BatchNorm frozen in evaluation
    # mode during D3, and with its statistics re-estimated on the retain images after it
    user_models purify --preset all-layers resnet18 --images 3000 --params '{"freeze_bn": true}' --label freeze-bn
    user_models purify --preset all-layers resnet18 --images 3000 --params '{"bn_recalibrate": true}' --label bn-recalibrate
    # then more variety in the images instead of more images (4,000 cleared it): random crops, a stronger overlay
    user_models purify --preset all-layers resnet18 --images 3000 --params '{"augment": true}' --label augment
    user_models purify --preset all-layers resnet18 --images 3000 --params '{"blend": 0.45}' --label blend0.45
    ;;
  twentieth-angles)  # twentieth round: how far the default turns the user models' weights (degrees from the suspect's,
    # each Linear/Conv2d), and the ResNet-18 at lr 0.03 (which cleared it in the nineteenth round)
    user_models purify --preset all-layers resnet18 keras-cnn tutorial-lenet --images 3000 --angles --label angles
    user_models purify --preset all-layers resnet18 --images 3000 --angles --params '{"lr": 0.03}' --label lr03-angles
    # the study's torchvision ResNet-18 (Blended; the default passes it) and, as a check on the fifteenth round's
    # line, the VGG Blended
    $PY benchmarks/d3_probes.py angles $RUNS/twentieth-angles.jsonl $RUNS/rn18-blended $RUNS/vgg-blended-s0
    # the weights' norms (no training): every study model's; the user models' are in `nineteenth-table`
    $PY benchmarks/d3_probes.py norms $RUNS/twentieth-norms.jsonl $(ls -d $RUNS/*/)
    ;;
  twentieth-norm-lr)  # twentieth round, after twentieth-angles: a learning rate that follows the weights' size. D3's
    # distance pushes every weight by the same length a step, so a weight of norm n turns by about length / n: the
    # user ResNet-18's convolutions (median norm 13.6) turned 13–37° where the dev models' (median 3.1–5.1) turned
    # 58–129°. Candidate: lr = 0.01 × max(1, m / 5.06), m the suspect's median norm over the weights in the
    # distance, 5.06 the largest of the dev models' (the VGG Blended): no model's features turn slower than the dev
    # models' did. Run here with each model's lr written out (3,000 images), on the BatchNorm models whose m is above
    # 5.06 by half or more (the rule leaves every other study model as it is); `twentieth-norm-lr a` and `b` side by side
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers resnet18 --images 3000 --params '{"lr": 0.0269}' --label norm-lr
      user_models purify --preset all-layers resnet18-patch --images 3000 --seed 1 --params '{"lr": 0.0277}' --label norm-lr
      study $RUNS/rn18-blended --final-only --seed 0 --out $RUNS/twentieth-norm-lr-s0.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0314'
      study $RUNS/mnasnet-badnets --final-only --seed 0 --out $RUNS/twentieth-norm-lr-s0.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0418'
    else
      for s in 0 1; do
        study $RUNS/mnv2-badnets --final-only --seed $s --out $RUNS/twentieth-norm-lr-s$s.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0259'
        study $RUNS/mnv3l-sig --final-only --seed $s --out $RUNS/twentieth-norm-lr-s$s.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0216'
        study $RUNS/lenet-bn-badnets --final-only --seed $s --out $RUNS/twentieth-norm-lr-s$s.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0216'
        study $RUNS/lenet-bn-blended --final-only --seed $s --out $RUNS/twentieth-norm-lr-s$s.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0251'
        study $RUNS/rn18-badnets-adam --final-only --seed $s --out $RUNS/twentieth-norm-lr-s$s.jsonl --candidate 'norm-lr=preset:all-layers,epochs:null,lr:0.0217'
      done
    fi
    ;;
  twentieth-size)  # twentieth round, after twentieth-norm-lr: the same idea per weight instead of one rate for the model:
    # each weight's distance weighed by max(1, its norm / 5.06) (`layer_weighting: size`); 3,000 images, seed 0;
    # `twentieth-size a` and `b` side by side
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers resnet18 keras-cnn --images 3000 --params '{"layer_weighting": "size"}' --label size
      user_models purify --preset all-layers resnet18-patch --images 3000 --seed 1 --params '{"layer_weighting": "size"}' --label size
    else
      study $DEV $RUNS/mnv2-badnets $RUNS/mnv3l-sig $RUNS/rn18-blended --final-only --seed 0 \
        --out $RUNS/twentieth-size-s0.jsonl --candidate 'size=preset:all-layers,epochs:null,layer_weighting:size'
    fi
    ;;
  twenty-first-size-median)  # twenty-first round: `layer_weighting: size` with each norm capped at the model's own
    # median weight norm (`size-median`: no weight pushed harder than a median-sized one), against the twentieth
    # round's cost of `size` on the MobileNets; 3,000 images, seed 0; `twenty-first-size-median a` and `b` side by side
    # (the models retrained on this round's Intel CPU differ in their bits from the AMD-trained ones of the nineteenth
    # and twentieth rounds, so the default runs again beside the candidate)
    if [ "${2:-a}" = a ]; then
      for s in 0 1; do
        user_models purify --preset all-layers resnet18 --images 3000 --seed $s
        user_models purify --preset all-layers resnet18 --images 3000 --seed $s --params '{"layer_weighting": "size-median"}' --label size-median
      done
      user_models purify --preset all-layers keras-cnn --images 3000
      user_models purify --preset all-layers keras-cnn --images 3000 --params '{"layer_weighting": "size-median"}' --label size-median
    else
      for run in vgg-blended-s0 mnv2-badnets mnv3l-sig; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-first-s0.jsonl \
          --candidate 'default=preset:all-layers,epochs:null' \
          --candidate 'size-median=preset:all-layers,epochs:null,layer_weighting:size-median'
      done
    fi
    ;;
  twenty-first-models)  # twenty-first round: two user models trained after `size-median` was chosen (check models:
    # benchmarks/user_models.py `resnet18-adam`, `mobilenet-v3-small`); `twenty-first-models a` and `b` side by side
    if [ "${2:-a}" = a ]; then user_models train resnet18-adam; else user_models train mobilenet-v3-small; fi
    ;;
  twenty-first-check)  # twenty-first round, once on each check model: the default and `size-median` (seeds 0, 1),
    # `reference` at 12 epochs (seed 0); `twenty-first-check MODEL...`
    for s in 0 1; do
      user_models purify --preset all-layers "${@:2}" --images 3000 --seed $s
      user_models purify --preset all-layers "${@:2}" --images 3000 --seed $s --params '{"layer_weighting": "size-median"}' --label size-median
    done
    user_models purify "${@:2}" --images 3000 --preset reference --epochs 12 --params "$TWELVE" --label reference-12
    ;;
  twenty-first-diagnose)  # twenty-first round, after `twenty-first-check` (a diagnosis on a check model: nothing
    # chosen from it): where the default's 6 points go on the MobileNetV3-Small, without the overlay and with the
    # distance on the final classifier only (seed 0)
    user_models purify --preset all-layers mobilenet-v3-small --images 3000 --params '{"blend": 0}' --label blend0
    user_models purify --preset all-layers mobilenet-v3-small --images 3000 --params '{"layers": "auto"}' --label classifier-only
    # and the twentieth round's uncapped `size`, which README names for torchvision ResNets, on both check models
    user_models purify --preset all-layers resnet18-adam mobilenet-v3-small --images 3000 --params '{"layer_weighting": "size"}' --label size
    # last: BatchNorm statistics re-estimated on the plain retain images after D3, and twice the epochs (the
    # twelfth round's MobileNetV2 got 1.75 points back at 24)
    user_models purify --preset all-layers mobilenet-v3-small --images 3000 --params '{"bn_recalibrate": true}' --label bn-recalibrate
    user_models purify --preset all-layers mobilenet-v3-small --images 3000 --epochs 24
    # and the classifier-only distance at a second draw, and on the other check model
    user_models purify --preset all-layers mobilenet-v3-small --images 3000 --seed 1 --params '{"layers": "auto"}' --label classifier-only
    user_models purify --preset all-layers resnet18-adam --images 3000 --params '{"layers": "auto"}' --label classifier-only
    ;;
  twenty-third-shared)  # twenty-third round: the clean-loss bound also on each batch's shared adversarial copy (per
    # image, a perturbation that fools the model and the frozen suspect into the same class; `shared_radius`, a fraction
    # of the pixels' range: `s05`, `s10`); 3,000 images, seed 0 unless said; `twenty-third-shared a` and `b` side by side
    # (the order the round ran them; the default and `u10` beside them are the twenty-first and twenty-second rounds')
    if [ "${2:-a}" = a ]; then
      study $RUNS/cnn-blended-s1 --final-only --seed 0 --out $RUNS/twenty-third-s0.jsonl \
        --candidate 's10=preset:all-layers,epochs:null,shared_radius:0.1' \
        --candidate 's05=preset:all-layers,epochs:null,shared_radius:0.05'
      user_models purify --preset all-layers resnet18 --images 3000 --params '{"shared_radius": 0.05}' --label s05
      user_models purify --preset all-layers resnet18 --seed 1 --images 3000 --params '{"shared_radius": 0.05}' --label s05
      user_models purify --preset all-layers resnet18-adam --images 3000 --params '{"shared_radius": 0.05}' --label s05
    else
      for run in vgg-blended-s0 prn-wanet vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-third-s0.jsonl \
          --candidate 's05=preset:all-layers,epochs:null,shared_radius:0.05'
      done
      user_models purify --preset all-layers mobilenet-v3-small keras-cnn --images 3000 --params '{"shared_radius": 0.05}' --label s05
      for run in rn18-blended mnv3l-sig mnv2-badnets; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-third-s0.jsonl \
          --candidate 's05=preset:all-layers,epochs:null,shared_radius:0.05'
      done
    fi
    ;;
  twenty-third-more)  # twenty-third round, after twenty-third-shared: radius 0.05 at a second draw (the Adam ResNet-18,
    # whose default fails there, and the four smaller study models), then radius 0.03 (`s03`); `twenty-third-more a`
    # and `b` side by side
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params '{"shared_radius": 0.05}' --label s05
      for run in cnn-blended-s1 vgg-blended-s0 prn-wanet vgg-a2a-badnets; do  # their default: twenty-second-seed1
        study $RUNS/$run --final-only --seed 1 --out $RUNS/twenty-third-s1.jsonl \
          --candidate 's05=preset:all-layers,epochs:null,shared_radius:0.05'
      done
    else
      for run in vgg-blended-s0 vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-third-s0.jsonl \
          --candidate 's03=preset:all-layers,epochs:null,shared_radius:0.03'
      done
      user_models purify --preset all-layers resnet18 --images 3000 --params '{"shared_radius": 0.03}' --label s03
    fi
    # last, the MobileNetV3-Large SIG at a second draw, the default and radius 0.05 side by side
    study $RUNS/mnv3l-sig --final-only --seed 1 --out $RUNS/twenty-third-s1.jsonl \
      --candidate "$([ "${2:-a}" = a ] && echo 's05=preset:all-layers,epochs:null,shared_radius:0.05' || echo 'default=preset:all-layers,epochs:null')"
    ;;
  twenty-third-lite)  # twenty-third round, last: cheaper copies — one crafting step, copies for a quarter of each
    # batch (`s05-lite`) — on the three cells the default misses and three smaller study models; `twenty-third-lite a`
    # and `b` side by side
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers resnet18 --images 3000 --label s05-lite \
        --params '{"shared_radius": 0.05, "shared_steps": 1, "shared_fraction": 0.25}'
      user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --label s05-lite \
        --params '{"shared_radius": 0.05, "shared_steps": 1, "shared_fraction": 0.25}'
      user_models purify --preset all-layers mobilenet-v3-small keras-cnn --images 3000 --label s05-lite \
        --params '{"shared_radius": 0.05, "shared_steps": 1, "shared_fraction": 0.25}'
    else
      for run in mnv3l-sig vgg-blended-s0 vgg-a2a-badnets cnn-blended-s1 prn-wanet mnv2-badnets; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-third-s0.jsonl \
          --candidate 's05-lite=preset:all-layers,epochs:null,shared_radius:0.05,shared_steps:1,shared_fraction:0.25'
      done
    fi
    ;;
  twenty-fourth-once)  # twenty-fourth round: every retain image's shared adversarial copy crafted once, before any
    # weight moves (against the suspect alone; five steps), then reused at every step (`shared_schedule: once`): `o05`
    # with a copy for every image of a batch (`a`), `o05-half` for half of them (`b`); `twenty-fourth-once a` and `b`
    # side by side; first the four cells the default misses, then the rest of the twenty-third round's cells
    label=o05 params='{"shared_radius": 0.05, "shared_schedule": "once", "shared_steps": 5}'
    cand='preset:all-layers,epochs:null,shared_radius:0.05,shared_schedule:once,shared_steps:5'
    if [ "${2:-a}" = b ]; then
      label=o05-half params='{"shared_radius": 0.05, "shared_schedule": "once", "shared_steps": 5, "shared_fraction": 0.5}'
      cand="$cand,shared_fraction:0.5"
    fi
    study $RUNS/mnv3l-sig --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$label=$cand"
    user_models purify --preset all-layers resnet18 --images 3000 --params "$params" --label $label
    user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params "$params" --label $label
    study $RUNS/mnv3l-sig --final-only --seed 1 --out $RUNS/twenty-fourth-s1.jsonl --candidate "$label=$cand"
    for run in vgg-blended-s0 vgg-a2a-badnets cnn-blended-s1 prn-wanet rn18-blended mnv2-badnets; do
      study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$label=$cand"
    done
    user_models purify --preset all-layers mobilenet-v3-small keras-cnn --images 3000 --params "$params" --label $label
    ;;
  twenty-fourth-radius)  # twenty-fourth round, after twenty-fourth-once: smaller radii for the copies crafted once
    # (`o03` in `a`, `o02` in `b`, side by side), on the cells the default misses and the small study models
    r=0.03 label=o03
    if [ "${2:-a}" = b ]; then r=0.02 label=o02; fi
    params="{\"shared_radius\": $r, \"shared_schedule\": \"once\", \"shared_steps\": 5}"
    cand="$label=preset:all-layers,epochs:null,shared_radius:$r,shared_schedule:once,shared_steps:5"
    study $RUNS/mnv3l-sig --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
    for run in vgg-blended-s0 cnn-blended-s1 vgg-a2a-badnets prn-wanet; do
      study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
    done
    user_models purify --preset all-layers resnet18 --images 3000 --params "$params" --label $label
    user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params "$params" --label $label
    study $RUNS/mnv3l-sig --final-only --seed 1 --out $RUNS/twenty-fourth-s1.jsonl --candidate "$cand"
    ;;
  twenty-fourth-rest)  # twenty-fourth round, last: `o03` on the twenty-third round's other cells (`a` and `b` side by side)
    params='{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5}'
    cand='o03=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5'
    if [ "${2:-a}" = a ]; then
      study $RUNS/rn18-blended --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
      user_models purify --preset all-layers keras-cnn --images 3000 --params "$params" --label o03
    else
      study $RUNS/mnv2-badnets --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
      user_models purify --preset all-layers mobilenet-v3-small --images 3000 --params "$params" --label o03
    fi
    ;;
  twenty-fourth-more)  # twenty-fourth round, after twenty-fourth-rest: `o03` at the other draw of the cells whose
    # default ran at two (`a`), and copies for half of each batch at radius 0.03 (`o03-half`) on the four cells the
    # default misses (`b`); side by side
    if [ "${2:-a}" = a ]; then
      cand='o03=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5'
      params='{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5}'
      for run in cnn-blended-s1 vgg-blended-s0 prn-wanet vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 1 --out $RUNS/twenty-fourth-s1.jsonl --candidate "$cand"
      done
      user_models purify --preset all-layers resnet18 --seed 1 --images 3000 --params "$params" --label o03
      user_models purify --preset all-layers resnet18-adam --images 3000 --params "$params" --label o03
    else
      cand='o03-half=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,shared_fraction:0.5'
      params='{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "shared_fraction": 0.5}'
      study $RUNS/mnv3l-sig --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
      user_models purify --preset all-layers resnet18 --images 3000 --params "$params" --label o03-half
      user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params "$params" --label o03-half
      study $RUNS/mnv3l-sig --final-only --seed 1 --out $RUNS/twenty-fourth-s1.jsonl --candidate "$cand"
    fi
    ;;
  twenty-fourth-half)  # twenty-fourth round, last: `o03-half` on the twenty-third round's other cells at seed 0 (`a` and
    # `b` side by side)
    cand='o03-half=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,shared_fraction:0.5'
    params='{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "shared_fraction": 0.5}'
    if [ "${2:-a}" = a ]; then
      for run in cnn-blended-s1 vgg-blended-s0 prn-wanet vgg-a2a-badnets rn18-blended; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
      done
    else
      user_models purify --preset all-layers keras-cnn mobilenet-v3-small --images 3000 --params "$params" --label o03-half
      study $RUNS/mnv2-badnets --final-only --seed 0 --out $RUNS/twenty-fourth-s0.jsonl --candidate "$cand"
    fi
    ;;
  twenty-fourth-third)  # twenty-fourth round, last: seed 2 of the MobileNetV3-Large SIG (`a`) and the user ResNet-18
    # (`b`), the default and `o03` (side by side)
    if [ "${2:-a}" = a ]; then
      study $RUNS/mnv3l-sig --final-only --seed 2 --out $RUNS/twenty-fourth-s2.jsonl \
        --candidate 'default=preset:all-layers,epochs:null' \
        --candidate 'o03=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5'
    else
      user_models purify --preset all-layers resnet18 --seed 2 --images 3000
      user_models purify --preset all-layers resnet18 --seed 2 --images 3000 --label o03 \
        --params '{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5}'
    fi
    ;;
  twenty-fifth-lighter)  # twenty-fifth round: the copies crafted once (`o03`) with a lighter distance: on the final
    # classifier alone (`o03-head`, `layers: auto`), then λ 5 (`o03-l5`); the seven study models at seed 0 (`a`) and
    # the user models (`b`) side by side; the Keras CNN has no BatchNorm, where the default's distance is already
    # on the classifier alone
    o03='"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5'
    # (`o03-l5` was stopped after its first cell, the user ResNet-18, once `o03-head` had led on eight)
    for variant in 'o03-head:layers:auto:"layers": "auto"' 'o03-l5:lmd:5:"lmd": 5'; do
      IFS=: read -r label key value json <<< "$variant"
      if [ $label = o03-l5 ]; then
        [ "${2:-a}" = b ] && user_models purify --preset all-layers resnet18 --images 3000 --params "{$o03, $json}" --label $label
        continue
      fi
      if [ "${2:-a}" = a ]; then
        for run in mnv3l-sig vgg-blended-s0 cnn-blended-s1 prn-wanet vgg-a2a-badnets rn18-blended mnv2-badnets; do
          study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-fifth-s0.jsonl \
            --candidate "$label=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,$key:$value"
        done
      else
        user_models purify --preset all-layers resnet18 mobilenet-v3-small --images 3000 --params "{$o03, $json}" --label $label
        user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params "{$o03, $json}" --label $label
      fi
    done
    ;;
  twenty-fifth-head)  # twenty-fifth round, after twenty-fifth-lighter: `o03-head` at the other retain draws the
    # default ran (seed 1 on the study models, `a`; the user models, `b`), then at a third (seed 2) beside the default
    cand='o03-head=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,layers:auto'
    params='{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "layers": "auto"}'
    if [ "${2:-a}" = a ]; then
      for run in mnv3l-sig vgg-blended-s0 cnn-blended-s1 prn-wanet vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 1 --out $RUNS/twenty-fifth-s1.jsonl --candidate "$cand"
      done
      study $RUNS/mnv3l-sig --final-only --seed 2 --out $RUNS/twenty-fourth-s2.jsonl --candidate "$cand"
      for run in vgg-blended-s0 cnn-blended-s1 prn-wanet vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 2 --out $RUNS/twenty-fifth-s2.jsonl \
          --candidate 'default=preset:all-layers,epochs:null' --candidate "$cand"
      done
    else
      user_models purify --preset all-layers resnet18 mobilenet-v3-small --seed 1 --images 3000 --params "$params" --label o03-head
      user_models purify --preset all-layers resnet18-adam keras-cnn --images 3000 --params "$params" --label o03-head
      user_models purify --preset all-layers resnet18 --seed 2 --images 3000 --params "$params" --label o03-head
    fi
    ;;
  twenty-fifth-check)  # twenty-fifth round: check models of earlier rounds, trained here (their run directories
    # were not on this machine), the default and `o03-head` once each at seeds 0 and 1: the MobileNetV3-Small LF that
    # every method left above its floor (`a`), the ViT, SAM-trained VGG and augmented VGG BadNets (`b`)
    cands=(--candidate 'default=preset:all-layers,epochs:null'
           --candidate 'o03-head=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,layers:auto')
    if [ "${2:-a}" = a ]; then
      ONLY=mnv3-lf bash "$0" new-models
      runs="$RUNS/mnv3-lf"
    else
      ONLY="vit-blended vgg-sam-blended vgg-badnets-aug" bash "$0" models
      runs="$RUNS/vit-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug"
    fi
    for seed in 0 1 2; do  # (seed 2 ran last, after the round's change)
      study $runs --final-only --seed $seed --out $RUNS/twenty-fifth-check-s$seed.jsonl "${cands[@]}"
    done
    ;;
  twenty-fifth-small)  # twenty-fifth round: few clean images, the default beside `o03-head`: 500 on three study
    # models (seed 0), 800 on two user models (the issue's count; the default's 800-image user runs are the nineteenth
    # and twenty-first rounds')
    study $RUNS/vgg-blended-s0 $RUNS/cnn-blended-s1 $RUNS/prn-wanet $RUNS/mnv3l-sig --final-only --count 500 --seed 0 \
      --out $RUNS/twenty-fifth-500.jsonl --candidate 'default=preset:all-layers,epochs:null' \
      --candidate 'o03-head=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,layers:auto'
    user_models purify --preset all-layers resnet18 keras-cnn --images 800 --label o03-head \
      --params '{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "layers": "auto"}'
    # then, beside twenty-fifth-check: all-layers (the default then) on the two at 800 it had not run, `o03-head`
    # on the MobileNetV3-Small at 800, and a third draw (seed 2) of the Adam ResNet-18, which `o03-head` failed at seed 0
    user_models purify --preset all-layers keras-cnn mobilenet-v3-small --images 800
    user_models purify --preset all-layers mobilenet-v3-small --images 800 --label o03-head \
      --params '{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "layers": "auto"}'
    user_models purify --preset all-layers resnet18-adam --seed 2 --images 3000
    user_models purify --preset all-layers resnet18-adam --seed 2 --images 3000 --label o03-head \
      --params '{"shared_radius": 0.03, "shared_schedule": "once", "shared_steps": 5, "layers": "auto"}'
    # last, after the change: 1,000 images on the four small development models
    study $RUNS/vgg-blended-s0 $RUNS/cnn-blended-s1 $RUNS/prn-wanet $RUNS/vgg-a2a-badnets --final-only --count 1000 \
      --seed 0 --out $RUNS/twenty-fifth-1000.jsonl --candidate 'default=preset:all-layers,epochs:null' \
      --candidate 'o03-head=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5,layers:auto'
    ;;
  twenty-fifth-der)  # twenty-fifth round, last: the issue's DER bar on the small models at seed 0 — the faithful
    # presets (at the study's 12 epochs of batch 32) and FT-SAM beside the default's lines of twenty-fifth-lighter and
    # twenty-fifth-check; development models (`a`), check models (`b`), side by side (SAU, 4-30 min a cell, not run)
    runs="$RUNS/cnn-blended-s1 $RUNS/vgg-blended-s0 $RUNS/prn-wanet $RUNS/vgg-a2a-badnets"
    if [ "${2:-a}" = b ]; then runs="$RUNS/vit-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug"; fi
    study $runs --final-only --seed 0 --out $RUNS/twenty-fifth-der-s0.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}" \
      "${sixth_ft_sam[@]}"
    ;;
  twenty-sixth-check)  # twenty-sixth round: the default (`o03-head` of the twenty-fifth round) and `all-layers` (the
    # default before it) once, seed 0, 3,000 images, on models of earlier rounds that the default never ran on, trained
    # here first (their run directories were not on this machine; nothing is tuned on them); then, after
    # twenty-sixth-small, at a second retain draw (`twenty-sixth-check a 1` and `b 1`). `a`: models without
    # BatchNorm or with BatchNorm1d (the copies are all the default adds there: their distance was already on the
    # classifier), `b`: attention models, a ShuffleNetV2 and the paper's VGG19-BN; cheapest first
    cands=("${all_layers_now[@]}" "${the_default[@]}")
    # (the first run trained and ran `b`'s ViT BadNets before its all-to-all ViT; the order changes no cell)
    if [ "${2:-a}" = a ]; then names=$TWENTY_SIXTH_A; else names=$TWENTY_SIXTH_B; fi
    for name in $names; do
      train_twenty_sixth_model $name
      study $RUNS/$name --final-only --seed ${3:-0} --out $RUNS/twenty-sixth-check-s${3:-0}.jsonl "${cands[@]}"
    done
    ;;
  twenty-sixth-small)  # twenty-sixth round, after twenty-sixth-check: the same models (trained by it) with 500 clean
    # images, the default and `all-layers` once (seed 0), cheapest first
    # (then at a second retain draw, `twenty-sixth-small 1`; last, with 1,000 images at both draws side by side,
    # `twenty-sixth-small 0 1000` and `twenty-sixth-small 1 1000`)
    study $TWENTY_SIXTH_CHECK --final-only --count ${3:-500} --seed ${2:-0} \
      --out $RUNS/twenty-sixth-check-${3:-500}${2:+-s$2}.jsonl \
      "${all_layers_now[@]}" "${the_default[@]}"
    ;;
  twenty-sixth-der)  # twenty-sixth round, last: the issue's DER bar on this round's check models (seed 0, 3,000
    # images): the faithful presets (at the study's 12 epochs of batch 32) and FT-SAM beside the default's lines of
    # twenty-sixth-check; the twelve without attention (`a`) and the six others (`b`) side by side
    if [ "${2:-a}" = a ]; then names=$TWENTY_SIXTH_A; else names=$TWENTY_SIXTH_B; fi
    study $(printf "$RUNS/%s " $names) --final-only --seed 0 --out $RUNS/twenty-sixth-der-s0.jsonl \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    ;;
  twenty-sixth-half-check)  # twenty-sixth round, after twenty-sixth-half: `half` once (seed 0) on this round's check
    # models and the twenty-fifth round's four (trained by twenty-sixth-check and twenty-fifth-check)
    study $TWENTY_SIXTH_CHECK $RUNS/mnv3-lf $RUNS/vit-blended $RUNS/vgg-sam-blended $RUNS/vgg-badnets-aug --final-only \
      --seed 0 --out $RUNS/twenty-sixth-half-check-s0.jsonl "${twenty_sixth_half[@]}"
    ;;
  twenty-sixth-hybrid)  # twenty-sixth round, after twenty-sixth-check: a diagnosis on the one check model both the
    # default and `all-layers` left above its floor (hybrid-badnets, 17.92 and 18.87 % against 2.67): more steps, a
    # larger radius, the all-layer distance with the copies, the faithful `reference`, FT-SAM (nothing is chosen on it)
    study $RUNS/hybrid-badnets --final-only --seed 0 --out $RUNS/twenty-sixth-hybrid-s0.jsonl \
      --candidate 'e24=preset:copies,epochs:24' \
      --candidate 'r05=preset:copies,epochs:null,shared_radius:0.05' \
      --candidate 'o03=preset:all-layers,epochs:null,shared_radius:0.03,shared_schedule:once,shared_steps:5' \
      "${sixth_reference[@]}" "${sixth_ft_sam[@]}"
    ;;
  twenty-sixth-half)  # twenty-sixth round: the default with copies for half of each batch (`half`,
    # `shared_fraction: 0.5`), the one setting measured under the issue's 2 x wall-time bar (twenty-fourth round, with
    # the all-layer distance: it missed the MobileNetV3-Large SIG at one draw); the seven study models (`a`) and the
    # four user models (`b`) side by side, seed 0, beside the default's lines of the twenty-fifth round (`o03-head`)
    if [ "${2:-a}" = a ]; then
      study $SEVEN --final-only --seed 0 --out $RUNS/twenty-sixth-s0.jsonl \
        "${twenty_sixth_half[@]}"
    else
      user_models purify --preset copies resnet18 resnet18-adam mobilenet-v3-small keras-cnn --images 3000 \
        --params '{"shared_fraction": 0.5}' --label half
    fi
    ;;
  twenty-seventh-dev)  # twenty-seventh round: on the twenty-sixth round's check models without BatchNorm (now
    # development models), seed 0, 3,000 images (then `twenty-seventh-dev 0 500`): the default's features at lr 0.01
    # with the restarted classifier at 0.03 (`split`), everything at 0.01 (`lr01`) or 0.05 (`lr05`), the classifier
    # at 0.1 (`head10`), beside the default's lines of twenty-sixth-check and twenty-sixth-small
    study $(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) --final-only --seed ${2:-0} --count ${3:-3000} \
      --out $RUNS/twenty-seventh-dev-${3:-3000}-s${2:-0}.jsonl "${twenty_seventh_cands[@]}"
    ;;
  twenty-seventh-overlay)  # twenty-seventh round: the default without the fourth round's overlay (`blend: 0`,
    # `no-overlay`): the copies, crafted from the retain images, may do what the overlay did, at less cost; seed 0,
    # 3,000 images, on the development models without BatchNorm (`a`), the seven study models (`b`) and the four
    # user models (`c`); then, after the MobileNetV3-Small kept 44 % without it, that model at other retain draws
    # (`c1 1` and `c1 2` side by side)
    case ${2:-a} in
      a) study $(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) --final-only --seed 0 \
           --out $RUNS/twenty-seventh-dev-3000-s0.jsonl "${twenty_seventh_no_overlay[@]}" ;;
      b) study $SEVEN --final-only --seed 0 --out $RUNS/twenty-seventh-s0.jsonl "${twenty_seventh_no_overlay[@]}" ;;
      c) user_models purify --preset copies resnet18 resnet18-adam mobilenet-v3-small keras-cnn --images 3000 \
           --params '{"blend": 0}' --label no-overlay ;;
      c1) user_models purify --preset copies mobilenet-v3-small --images 3000 --params '{"blend": 0}' \
           --label no-overlay --seed ${3:-1} ;;
    esac
    ;;
  twenty-seventh-bn-check)  # twenty-seventh round, after twenty-seventh-overlay and twenty-seventh-check: `no-overlay`
    # once (seed 0, then 1) on the check models with BatchNorm of the twenty-fifth and twenty-sixth rounds (trained by
    # twenty-fifth-check and twenty-sixth-check), beside the default's lines of those rounds
    study $(printf "$RUNS/%s " $TWENTY_SIXTH_BN mnv3-lf vgg-sam-blended vgg-badnets-aug) --final-only \
      --seed ${2:-0} --out $RUNS/twenty-seventh-bn-check-s${2:-0}.jsonl "${twenty_seventh_no_overlay[@]}"
    ;;
  twenty-seventh-small)  # twenty-seventh round, last: `no-overlay` with 500 clean images (seed 0) on the models
    # with BatchNorm that ran the default with 500 images in the two rounds before (twenty-fifth-small's four small
    # study models, twenty-sixth-small's seven), beside the default's lines there
    study $(printf "$RUNS/%s " cnn-blended-s1 vgg-blended-s0 prn-wanet mnv3l-sig $TWENTY_SIXTH_BN) --final-only \
      --seed 0 --count 500 --out $RUNS/twenty-seventh-500-s0.jsonl "${twenty_seventh_no_overlay[@]}"
    ;;
  twenty-seventh-models)  # twenty-seventh round: its check models (`a` and `b` side by side)
    for entry in $(twenty_seventh_entries "${2:-a}"); do
      IFS=: read -r name step arg <<< "$entry"
      ONLY=$name bash "$0" $step $arg
    done
    ;;
  twenty-eighth-dev)  # twenty-eighth round: on the twenty-seventh round's development models without BatchNorm,
    # one candidate per process (`eps-auto`, `lmd30` or `ft`; `where`: the three diagnostic candidates; `warmup`: both
    # warm-ups; `head-first`: both classifier-first runs, with 500 images), seed 0, 3,000 images (then `... 0 500`),
    # beside the default's lines of twenty-sixth-check and twenty-sixth-small
    case ${2:?eps-auto, lmd30, ft, where, warmup or head-first} in
      eps-auto) picked=("${twenty_eighth_eps_auto[@]}") ;;
      lmd30) picked=("${twenty_eighth_lmd30[@]}") ;;
      ft) picked=("${twenty_eighth_ft[@]}") ;;
      where) picked=("${twenty_eighth_where[@]}") ;;
      warmup) picked=("${twenty_eighth_warmup[@]}") ;;
      head-first) picked=("${twenty_eighth_head_first[@]}") ;;
      *) echo "twenty-eighth-dev: no candidate named $2" >&2; exit 2 ;;
    esac
    study $(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) --final-only --seed ${3:-0} --count ${4:-3000} \
      --out $RUNS/twenty-eighth-dev-${4:-3000}-s${3:-0}.jsonl "${picked[@]}"
    ;;
  twenty-ninth-models)  # twenty-ninth round, first: train the twenty-seventh round's development models (as
    # twenty-sixth-check does, no defense run), `a` the nine without attention and `b` the two ViTs side by side
    if [ "${2:-a}" = a ]; then names=$TWENTY_SIXTH_A; else names=$TWENTY_SIXTH_B; fi
    for name in $TWENTY_SEVENTH_DEV; do
      [[ " $names " == *" $name "* ]] && train_twenty_sixth_model $name
    done
    ;;
  twenty-ninth-dev)  # twenty-ninth round: on the twenty-seventh round's development models without BatchNorm
    # (trained by twenty-ninth-models a and b, or twenty-sixth-check), seed 0, 3,000 images (then `... 0 500`), the
    # anchored candidates with the default beside them (`anchor`: the suspects were retrained), then `distill`, then
    # `distill-retain` (first run on the Blended and LeNet-5 models, then the rest; the order changes no cell)
    case ${2:?anchor, distill or distill-retain} in
      anchor) picked=("${the_default[@]}" "${twenty_ninth_anchor[@]}") ;;
      distill) picked=("${twenty_ninth_distill[@]}") ;;
      distill-retain) picked=("${twenty_ninth_distill_retain[@]}") ;;
      *) echo "twenty-ninth-dev: no candidate named $2" >&2; exit 2 ;;
    esac
    study $(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) --final-only --seed ${3:-0} --count ${4:-3000} \
      --out $RUNS/twenty-ninth-dev-${4:-3000}-s${3:-0}.jsonl "${picked[@]}"
    ;;
  twenty-ninth-distill025)  # twenty-ninth round, last: `distill025-retain` on the LeNet-5 BadNets, the tutorial CNN
    # Blended and the ViT BadNets, seed 0, 500 images (then `... 0 3000` if wanted)
    study $RUNS/lenet-badnets $RUNS/tutorial-blended $RUNS/vit-badnets --final-only --seed ${2:-0} --count ${3:-500} \
      --out $RUNS/twenty-ninth-dev-${3:-500}-s${2:-0}.jsonl "${twenty_ninth_distill025[@]}"
    ;;
  thirtieth-leak)  # thirtieth round, first: on the three development models `distill05-retain` left above their
    # floors with 500 images (LeNet-5 BadNets, tutorial CNN Blended, ViT BadNets), the soft targets fading out (`decay`)
    # or at T 1 (`t1`), or scaled by the floor's repeats (`scaled`), seed 0, 500 images
    thirtieth_pick ${2:?decay, t1 or scaled}
    study $RUNS/lenet-badnets $RUNS/tutorial-blended $RUNS/vit-badnets --final-only --seed ${3:-0} --count ${4:-500} \
      --out $RUNS/thirtieth-dev-${4:-500}-s${3:-0}.jsonl "${picked[@]}"
    ;;
  thirtieth-dev)  # thirtieth round: one candidate (default, distill-retain, decay, t1, scaled) on the twenty-seventh round's
    # development models without BatchNorm, seed 0, 3,000 images unless given
    thirtieth_pick ${2:?default, distill-retain, decay, t1 or scaled}
    study $(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) --final-only --seed ${3:-0} --count ${4:-3000} \
      --out $RUNS/thirtieth-dev-${4:-3000}-s${3:-0}.jsonl "${picked[@]}"
    ;;
  thirtieth-check-new)  # thirtieth round: the default as it was (`copies`) and `distill05-retain` (3,000 images, the
    # same as the default since this round) on the four check models the twenty-ninth round left untrained (trained by
    # twenty-seventh-models a and b), seed 0; then `... 1 vit-blended vit-blended-ls`
    names=${*:3}
    study $(printf "$RUNS/%s " ${names:-vit-blended vit-blended-ls tutorial-sig tutorial-a2a}) --final-only \
      --seed ${2:-0} --out $RUNS/thirtieth-check-3000-s${2:-0}.jsonl "${the_default[@]}" "${twenty_ninth_distill_retain[@]}"
    ;;
  thirtieth-control)  # thirtieth round: the default as it was, 500 images, another retain draw (seed 1), on the three
    # development models the soft targets left above their floors at seed 0
    study $RUNS/lenet-badnets $RUNS/vit-badnets $RUNS/tutorial-blended --final-only --seed ${2:-1} --count 500 \
      --out $RUNS/thirtieth-dev-500-s${2:-1}.jsonl "${the_default[@]}"
    ;;
  thirtieth-check-small)  # thirtieth round, after the default changed: the default before (`copies`) and now
    # (`default30`) on the twenty-seventh round's check models (`a` and `b` side by side), seed 0, 1,000 or 500 images;
    # then `... a|b 3000 1`, a second retain draw at 3,000 images
    study $(twenty_seventh_runs "${2:?a or b}") --final-only --seed ${4:-0} --count ${3:?1000, 500 or 3000} \
      --out $RUNS/thirtieth-check-${3}-s${4:-0}.jsonl "${the_default[@]}" --candidate 'default30=preset:soft-lr03,epochs:null'
    ;;
  thirtieth-new-default)  # thirtieth round, last: the default as it is now (`default30`) on the MLP and LeNet-5
    # BadNets at 500, 1,000 and 3,000 images: the same numbers as the candidate it was made of
    for n in 500 1000 3000; do
      study $RUNS/mlp-plain-badnets $RUNS/lenet-badnets --final-only --seed 0 --count $n \
        --out $RUNS/thirtieth-dev-$n-s0.jsonl --candidate 'default30=preset:soft-lr03,epochs:null'
    done
    ;;
  thirty-first-bn)  # thirty-first round: the default (on a model with BatchNorm the same as `copies`) and the soft
    # targets its rule gives a model without BatchNorm (`scaled`) on models with BatchNorm: development (`dev`: small
    # CNN and VGG Blended, VGG BadNets all-to-all, the twelfth round's VGG Blended with target 5; the PreAct-ResNet18
    # WaNet, retrained here, came out with BatchNorm statistics that send 97 % of clean test images to its target,
    # ACC 12.20, so it is left out) or check (`check`: SAM-trained VGG Blended, augmented VGG BadNets, ResNet-18
    # Blended; `check-small`: the twenty-sixth round's MLPs with BatchNorm1d, Blended and LF, and LeNet-5 with
    # BatchNorm BadNets), trained first; seed 0, 3,000 images unless given
    names=$(bn_part thirty-first-bn ${2:?dev, check or check-small})
    [ $# -gt 4 ] && names="${*:5}"  # `... check 1 3000 vgg-badnets-aug`: those of the part only
    if [ $2 = check-small ]; then
      for name in $names; do train_twenty_sixth_model $name; done
    else
      ONLY="$names" bash "$0" models
      ONLY="$names" bash "$0" twelfth-models b
    fi
    study $(printf "$RUNS/%s " $names) --final-only --seed ${3:-0} --count ${4:-3000} \
      --out $RUNS/thirty-first-bn-$2-${4:-3000}-s${3:-0}.jsonl "${the_default[@]}" "${thirtieth_scaled[@]}"
    ;;
  thirty-first-new-default)  # thirty-first round, last: the default as it is now (`default31`) on the VGG Blended
    # with target 5 at 500 and 3,000 images: the same numbers as the soft targets it was made of (`scaled`)
    for n in 500 3000; do
      study $RUNS/vgg-blended-t5 --final-only --seed 0 --count $n --out $RUNS/thirty-first-bn-dev-$n-s0.jsonl \
        --candidate 'default31=preset:soft,epochs:null'
    done
    ;;
  thirty-first-demo)  # thirty-first round: the README demo (a small CNN with BatchNorm, 67 images, 60 epochs) at
    # seeds 0-2: the default now (α scaled by 12 / 60), its soft targets unscaled, and `copies`
    demo_table "D3 on the demo (60 epochs)" '{"default31": {"preset": "soft"},
      "soft, α 0.5 unscaled": {"preset": "soft", "distill_scaled": false},
      "copies": {"preset": "copies"}}'
    ;;
  thirty-third-rise)  # thirty-third round: lambda rising from the reference's 0.5 to the paper's 10 over the run
    # (`lmd_control: geometric`, `lmd_range: [0.5, 10]`) on top of the default, on models with BatchNorm: `users` the
    # ConvMixer (a user model whose backdoor the default keeps at both draws), or the thirty-first round's parts
    # (`dev`, `check`, `check-small`); seed 0, 3,000 images unless given; names after them: those models only
    if [ ${2:?users, dev, check or check-small} = users ]; then names=convmixer; else names=$(bn_part thirty-third-rise $2); fi
    [ $# -gt 4 ] && names="${*:5}"
    if [ $2 = users ]; then
      user_models purify $names --images ${4:-3000} --seed ${3:-0} --preset soft \
        --params '{"lmd_control": "geometric", "lmd_range": [0.5, 10]}' --label rise
    else
      study $(printf "$RUNS/%s " $names) --final-only --seed ${3:-0} --count ${4:-3000} \
        --out $RUNS/thirty-third-rise-$2-${4:-3000}-s${3:-0}.jsonl \
        --candidate "rise=preset:soft,epochs:null,lmd_control:geometric,lmd_range:[0.5,10]"
    fi
    ;;
  thirty-third-screen)  # thirty-third round: single options on top of the default on the ConvMixer (a development
    # model from this round on), at retain draw $2 (0 or 1): a larger copy radius, lr 0.03, each copy crafted again at
    # up to twice the radius until it fools the suspect (`esc2`, after the other two), twice the epochs
    for cand in 'r05={"shared_radius": 0.05}' 'lr03={"lr": 0.03}' 'esc2={"shared_escalate": 2}'; do
      user_models purify convmixer --images 3000 --seed ${2:-0} --preset soft --params "${cand#*=}" --label ${cand%%=*}
    done
    user_models purify convmixer --images 3000 --seed ${2:-0} --preset soft --epochs 24
    ;;
  thirty-third-bn)  # thirty-third round: one option on top of the default (LABEL: `r05` copies at radius 0.05,
    # `lr03` lr 0.03, `esc2` each copy crafted again at up to twice the radius until it fools the suspect; then
    # `copies-lr03`, `copies` at lr 0.03: the default now without its soft targets) on the
    # thirty-first round's parts (`dev`, `check`, `check-small`), seed 0, 3,000 images unless given; names after
    # them: those models only. `thirty-third-bn LABEL PART [SEED [COUNT [NAME...]]]`
    case ${2:?r05, lr03, esc2 or copies-lr03} in
      r05) option=preset:soft,shared_radius:0.05 ;;
      lr03) option=preset:soft,lr:0.03 ;;
      esc2) option=preset:soft,shared_escalate:2 ;;
      copies-lr03) option=preset:copies,lr:0.03 ;;  # after the change: the default now without its soft targets
      *) echo "thirty-third-bn: r05, lr03, esc2 or copies-lr03, not $2" >&2; exit 2 ;;
    esac
    names=$(bn_part thirty-third-bn ${3:?dev, check or check-small})
    [ $# -gt 5 ] && names="${*:6}"
    study $(printf "$RUNS/%s " $names) --final-only --seed ${4:-0} --count ${5:-3000} \
      --out $RUNS/thirty-third-$2-$3-${5:-3000}-s${4:-0}.jsonl --candidate "$2=epochs:null,$option"
    ;;
  thirty-third-fooled)  # thirty-third round: how many retain images the default's copies fool at radius 0.03-0.06
    # (crafted once against the suspect, no training) on the models with BatchNorm of the thirty-first round and the
    # ConvMixer (names after the step: those only; `user:NAME` for a user model)
    names="$(bn_part thirty-third-fooled dev) $(bn_part thirty-third-fooled check) $(bn_part thirty-third-fooled check-small)"
    targets="$(printf "$RUNS/%s " $names) user:convmixer"; [ $# -gt 1 ] && targets="${*:2}"
    $PY benchmarks/d3_probes.py fooled $RUNS/thirty-third-fooled.jsonl $targets
    ;;
  thirty-third-users)  # thirty-third round, after the change: two user models with BatchNorm written for it (an
    # EfficientNet-like and a DenseNet-like network; check models, run once): the default (lr 0.03 on them) and `soft`
    # (the default before, lr 0.01) at retain draws 0 and 1 with 3,000 images and with 500, the faithful presets at the
    # study's 12 epochs; then the ConvMixer under the default now (names after the step: those models only)
    names="efficientnet-lite densenet-lite"; [ $# -gt 1 ] && names="${*:2}"
    user_models train $names
    for s in 0 1; do
      user_models purify $names --images 3000 --seed $s --preset soft-lr03
      user_models purify $names --images 3000 --seed $s --preset soft
    done
    user_models purify $names --images 500 --preset soft-lr03
    user_models purify $names --images 500 --preset soft
    for p in reference paper; do
      user_models purify $names --images 3000 --preset $p --epochs 12 --params "$TWELVE" --label $p-12
    done
    ;;
  thirty-third-convmixer)  # thirty-third round, after the change: the ConvMixer under the default now (lr 0.03), both
    # draws and 500 images
    for s in 0 1; do user_models purify convmixer --images 3000 --seed $s --preset soft-lr03; done
    user_models purify convmixer --images 500 --preset soft-lr03
    ;;
  thirty-third-copies-users)  # thirty-third round, last (a probe; nothing changes): `copies` at lr 0.03, the default
    # now without its soft targets, on the user models with BatchNorm of the round at both draws (names after the
    # step: those only)
    names="convmixer efficientnet-lite densenet-lite"; [ $# -gt 1 ] && names="${*:2}"
    for s in 0 1; do
      user_models purify $names --images 3000 --seed $s --preset copies --params '{"lr": 0.03}' --label copies-lr03
    done
    ;;
  thirty-fifth-check)  # thirty-fifth round, after the change: user models written for it (`wrn-mixup`, a
    # wide-ResNet-style network trained with mixup; `gn-resnet`, a ResNet with GroupNorm trained with random erasing;
    # check models, run once): trained, then the default now and `soft-lr03` (the default before) at both draws with
    # 3,000 images and at draw 0 with 500, then the faithful presets at the study's 12 epochs, draw 0 (names after the
    # step: those models only)
    names="wrn-mixup gn-resnet"; [ $# -gt 1 ] && names="${*:2}"
    for name in $names; do
      user_models train $name
      for p in default soft-lr03; do
        for s in 0 1; do user_models purify $name --images 3000 --seed $s --preset $p; done
        user_models purify $name --images 500 --preset $p
      done
      for p in reference paper; do
        user_models purify $name --images 3000 --preset $p --epochs 12 --params "$TWELVE" --label $p-12
      done
    done
    ;;
  thirty-fifth-plain)  # thirty-fifth round: a candidate of thirty-fourth-bn (LABEL) on the models without BatchNorm,
    # the twenty-seventh round's development models (`dev`) or its check models (`check`, halves a and b), seed 0,
    # 3,000 images unless given. `thirty-fifth-plain LABEL PART [SEED [COUNT]]`
    candidate=$(distill_on_candidate thirty-fifth-plain ${2:?copy-labels or copy-soft}) || exit 2
    case ${3:?dev or check} in
      dev) runs=$(printf "$RUNS/%s " $TWENTY_SEVENTH_DEV) ;;
      check) runs="$(twenty_seventh_runs a)$(twenty_seventh_runs b)" ;;
      *) echo "thirty-fifth-plain: dev or check, not $3" >&2; exit 2 ;;
    esac
    study $runs --final-only --seed ${4:-0} --count ${5:-3000} \
      --out $RUNS/thirty-fifth-$2-plain-$3-${5:-3000}-s${4:-0}.jsonl --candidate "$candidate"
    ;;
  thirty-fourth-bn)  # thirty-fourth round: the default with the suspect's soft targets on part of each batch only
    # (LABEL: `copy-labels`, `distill_on: images`: the plain retain images, the copies on their labels; `copy-soft`,
    # `distill_on: copies`: the copies, the plain images on their labels) on the thirty-first round's parts (`dev`,
    # `check`, `check-small`), seed 0, 3,000 images unless given; names after them: those models only.
    # `thirty-fourth-bn LABEL PART [SEED [COUNT [NAME...]]]`
    candidate=$(distill_on_candidate thirty-fourth-bn ${2:?copy-labels or copy-soft}) || exit 2
    names=$(bn_part thirty-fourth-bn ${3:?dev, check or check-small})
    [ $# -gt 5 ] && names="${*:6}"
    study $(printf "$RUNS/%s " $names) --final-only --seed ${4:-0} --count ${5:-3000} \
      --out $RUNS/thirty-fourth-$2-$3-${5:-3000}-s${4:-0}.jsonl --candidate "$candidate"
    ;;
  thirty-fourth-users)  # thirty-fourth round: a candidate of thirty-fourth-bn (LABEL) on the user models with
    # BatchNorm of the thirty-third round at both draws with 3,000 images and at draw 0 with 500 (names after the
    # label: those only). `thirty-fourth-users LABEL [NAME...]`
    on=$(distill_on_of thirty-fourth-users ${2:?copy-labels or copy-soft}) || exit 2
    names="convmixer densenet-lite efficientnet-lite"; [ $# -gt 2 ] && names="${*:3}"
    for s in 0 1; do
      user_models purify $names --images 3000 --seed $s --preset soft-lr03 --params "{\"distill_on\": \"$on\"}" --label $2
    done
    user_models purify $names --images 500 --preset soft-lr03 --params "{\"distill_on\": \"$on\"}" --label $2
    ;;
  thirty-fourth-check)  # thirty-fourth round: a user model written for it (`resnext-lite`, trained on shifted images;
    # a check model, run once per candidate): trained, then the default and `copy-soft` (thirty-fourth-bn) at both
    # draws with 3,000 images and at draw 0 with 500
    user_models train resnext-lite
    for s in 0 1; do user_models purify resnext-lite --images 3000 --seed $s --preset soft-lr03; done
    user_models purify resnext-lite --images 500 --preset soft-lr03
    bash "$0" thirty-fourth-users copy-soft resnext-lite
    ;;
  thirty-fourth-demo)  # thirty-fourth round: the README demo (a small CNN with BatchNorm, 67 images, 60 epochs) at
    # seeds 0-2 with `copy-soft` (the default's row is thirty-third-demo's `lr 0.03`)
    demo_table "D3 on the demo (60 epochs)" '{"copy-soft": {"distill_on": "copies"}}'
    ;;
  thirty-third-new-default)  # thirty-third round, after the change: the default now on one development model, seed
    # 0, 3,000 images (the `lr03` line's numbers)
    study $RUNS/vgg-blended-t5 --final-only --seed 0 --out $RUNS/thirty-third-lr03-dev-3000-s0.jsonl \
      --candidate 'default33=preset:soft-lr03,epochs:null'
    ;;
  thirty-third-demo)  # thirty-third round: the README demo (a small CNN with BatchNorm, 67 images, 60 epochs) at
    # seeds 0-2 with D3 at the rate the default's rule now gives models with BatchNorm and at the demo's lr 0.01
    demo_table "D3 on the demo (60 epochs)" '{"lr 0.03": {"preset": "soft-lr03"},
      "lr 0.01 (the demo until now)": {"preset": "soft-lr03", "lr": 0.01}}'
    ;;
  thirty-second-der)  # thirty-second round: the issue's DER bar for the default since the thirty-first round, seed
    # 0, 3,000 images, on one to three models of each family the rounds 29-31 ran it on: the faithful presets (the
    # study's 12 epochs of batch 32) and FT-SAM (`base`), or SAU (`sau`, slower: run it beside `base`), beside the
    # default's seed-0 lines of those rounds; names after the part: those models only
    names="mlp-blended-17 mlp-plain-badnets mlp-bn-blended lenet-blended lenet-badnets lenet-bn-badnets cnn-blended-s1
      cnn-plain-blended cnn-gn-badnets vgg-sam-blended vgg-blended-s0 vit-badnets tutorial-sig"
    [ $# -gt 2 ] && names="${*:3}"
    case ${2:?base or sau} in
      base) picked=("${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}") ;;
      sau) picked=(--candidate "sau=method:sau,augment:false") ;;
      *) echo "thirty-second-der: base or sau, not $2" >&2; exit 2 ;;
    esac
    study $(printf "$RUNS/%s " $names) --final-only --seed 0 --out $RUNS/thirty-second-der-$2-s0.jsonl "${picked[@]}"
    ;;
  thirty-second-convmixer)  # thirty-second round, after thirty-second-users: the ConvMixer, whose backdoor the default
    # kept at both draws: `copies` at draw 1 and with 500 images, `reference` at draw 1, the default with lambda 0.5
    # at both draws, `all-layers` at draw 1 (probes on a check model; nothing changes)
    user_models purify convmixer --images 3000 --seed 1 --preset copies
    user_models purify convmixer --images 500 --preset copies
    user_models purify convmixer --images 3000 --seed 1 --preset reference --epochs 12 --params "$TWELVE" --label reference-12
    for s in 1 0; do user_models purify convmixer --images 3000 --seed $s --preset soft --params '{"lmd": 0.5}' --label lmd05; done
    user_models purify convmixer --images 3000 --seed 1 --preset all-layers
    # then, after the round's text was written: lambda 2 at both draws
    for s in 0 1; do user_models purify convmixer --images 3000 --seed $s --preset soft --params '{"lmd": 2}' --label lmd2; done
    ;;
  thirty-second-lmd)  # thirty-second round, a probe after the ConvMixer (a user model) kept its backdoor under the
    # default and lost it under `reference` (lambda 0.5): the default with lambda 0.5 on the thirty-first round's four
    # development models with BatchNorm and the augmented VGG BadNets, seed 0, 3,000 images; nothing changes
    # (`thirty-second-lmd 2`: lambda 2 instead, after the round's text was written)
    lmd=${2:-0.5}
    study $(printf "$RUNS/%s " cnn-blended-s1 vgg-blended-s0 vgg-a2a-badnets vgg-blended-t5 vgg-badnets-aug) --final-only \
      --seed 0 --out $RUNS/thirty-second-lmd-3000-s0.jsonl --candidate "lmd${lmd//./}=preset:soft,epochs:null,lmd:$lmd"
    ;;
  thirty-second-users)  # thirty-second round: three models of forms the study never had (a ConvMixer, a ConvNeXt-style
    # network with LayerNorm and no BatchNorm, an MLP-Mixer), built, poisoned and trained in plain PyTorch
    # (benchmarks/user_models.py), check models run once: the default at 3,000 images (retain draws 0 and 1) and 500,
    # `copies` (the default before the thirtieth round), the faithful presets at the study's 12 epochs of batch 32,
    # FT-SAM and SAU at the same budget; names after the step: those models only
    names="convmixer convnext-ln mlp-mixer"; [ $# -gt 1 ] && names="${*:2}"
    user_models train $names
    for s in 0 1; do soft_where_batchnorm $names -- --images 3000 --seed $s; done
    soft_where_batchnorm $names -- --images 500
    user_models purify $names --images 3000 --preset copies
    for p in reference paper; do
      user_models purify $names --images 3000 --preset $p --epochs 12 --params "$TWELVE" --label $p-12
    done
    for m in ft-sam sau; do
      user_models purify $names --images 3000 --method $m --epochs 12 --params "$TWELVE" --label $m-12
    done
    ;;
  twenty-eighth-ft-check)  # twenty-eighth round: plain fine-tuning (`ft`) on the twenty-seventh round's check models
    # (`a` and `b` side by side), seed 0, 3,000 images (then `... a|b 0 500`), beside the default's lines there
    study $(twenty_seventh_runs "${2:-a}") --final-only --seed ${3:-0} \
      --count ${4:-3000} --out $RUNS/twenty-eighth-check-${4:-3000}-s${3:-0}.jsonl "${twenty_eighth_ft[@]}"
    ;;
  twenty-eighth-der)  # twenty-eighth round, last: the issue's DER bar on the twenty-seventh round's check models
    # (seed 0, 3,000 images): the faithful presets (at the study's 12 epochs of batch 32) and FT-SAM beside the
    # default's lines of twenty-seventh-check (`a` and `b` side by side); then `a 1` and `b 1`, a second retain draw
    study $(twenty_seventh_runs "${2:-a}") --final-only --seed ${3:-0} \
      --out $RUNS/twenty-eighth-der-s${3:-0}.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    ;;
  twenty-eighth-curve)  # twenty-eighth round: the default and `nodist-plain` on the MLP and the LeNet-5 BadNets with
    # 500 images, seed 0, test accuracy after every epoch (the per-epoch history of the lines; for the report only)
    study $RUNS/mlp-plain-badnets $RUNS/lenet-badnets --seed 0 --count 500 --out $RUNS/twenty-eighth-curve-500-s0.jsonl \
      "${the_default[@]}" "${twenty_eighth_nodist_plain[@]}"
    ;;
  twenty-seventh-check)  # twenty-seventh round, after twenty-seventh-overlay: the default and `no-overlay` once on
    # the check models (trained by twenty-seventh-models), seed 0, 3,000 images; then `... a|b 1` and `... a|b 0 500`
    study $(twenty_seventh_runs "${2:-a}") --final-only --seed ${3:-0} \
      --count ${4:-3000} --out $RUNS/twenty-seventh-check-${4:-3000}-s${3:-0}.jsonl \
      "${the_default[@]}" "${twenty_seventh_no_overlay[@]}"
    ;;
  twenty-second-universal)  # twenty-second round: the clean-loss bound also under one shared perturbation
    # (`universal_radius`, a fraction of the pixels' range), with the default's all-layer distance (`u10`, `u20`) and
    # with the distance on the final classifier only (`classifier-only-u10`); 3,000 images; `twenty-second-universal a`
    # and `b` side by side (the order the round ran them)
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers keras-cnn resnet18 mobilenet-v3-small --images 3000 --params '{"universal_radius": 0.1}' --label u10
      user_models purify --preset all-layers resnet18 --images 3000 --params '{"universal_radius": 0.2}' --label u20
      user_models purify --preset all-layers resnet18 --images 3000 --params '{"layers": "auto", "universal_radius": 0.1}' \
        --label classifier-only-u10
      study $RUNS/vgg-blended-s0 --final-only --seed 0 --out $RUNS/twenty-second-s0.jsonl \
        --candidate 'u05=preset:all-layers,epochs:null,universal_radius:0.05'
      user_models purify --preset all-layers keras-cnn resnet18 --images 3000 --params '{"universal_radius": 0.05}' --label u05
      user_models purify --preset all-layers resnet18 --seed 1 --images 3000 --params '{"universal_radius": 0.1}' --label u10
    else
      user_models purify --preset all-layers mobilenet-v3-small --images 3000 --params '{"layers": "auto", "universal_radius": 0.1}' \
        --label classifier-only-u10
      study $RUNS/vgg-blended-s0 --final-only --seed 0 --out $RUNS/twenty-second-s0.jsonl \
        --candidate 'u10=preset:all-layers,epochs:null,universal_radius:0.1' \
        --candidate 'u20=preset:all-layers,epochs:null,universal_radius:0.2' \
        --candidate 'classifier-only-u10=preset:all-layers,epochs:null,layers:auto,universal_radius:0.1'
      user_models purify --preset all-layers keras-cnn --images 3000 --params '{"universal_radius": 0.2}' --label u20
      user_models purify --preset all-layers resnet18-adam --images 3000 --params '{"universal_radius": 0.1}' --label u10
      user_models purify --preset all-layers resnet18-adam --images 3000 --params '{"layers": "auto", "universal_radius": 0.1}' \
        --label classifier-only-u10
      user_models purify --preset all-layers mobilenet-v3-small --seed 1 --images 3000 --params '{"layers": "auto", "universal_radius": 0.1}' \
        --label classifier-only-u10
      user_models purify --preset all-layers mobilenet-v3-small --seed 1 --images 3000 --params '{"universal_radius": 0.1}' --label u10
    fi
    ;;
  twenty-second-more)  # twenty-second round, after twenty-second-universal: radius 0.05 (`u05`) on the user ResNet-18 at
    # a second draw (7.08 %, above its floor, where the default left 4.50: stopped there), then radius 0.1 (`u10`)
    # beside the default on the user models (a) and on the study's models, retrained here (b); 3,000 images;
    # `twenty-second-more a` and `b` side by side
    if [ "${2:-a}" = a ]; then
      user_models purify --preset all-layers resnet18 --seed 1 --images 3000 --params '{"universal_radius": 0.05}' --label u05
      user_models purify --preset all-layers resnet18-adam --seed 1 --images 3000 --params '{"universal_radius": 0.1}' --label u10
      for run in mnv3l-sig mnv2-badnets vgg-blended-s0; do  # their default: step twenty-first-size-median b
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-second-s0.jsonl \
          --candidate 'u10=preset:all-layers,epochs:null,universal_radius:0.1'
      done
    else
      attack cnn-blended-s1 blended --model small_cnn --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 1
      attack prn-wanet wanet --model preactresnet18 --width 0.125 --epochs 6 --batch-size 128 --train-subset 30000 --test-subset 2000 --seed 2
      attack rn18-blended blended --model torchvision:resnet18 --epochs 3 --batch-size 128 --train-subset 20000 --test-subset 2000 --seed 6
      attack vgg-a2a-badnets badnets --model small_vgg --width 16 --mode all2all --epochs 6 --batch-size 64 --train-subset 20000 --test-subset 2000 --seed 9 --no-augment
      for run in cnn-blended-s1 prn-wanet rn18-blended vgg-a2a-badnets; do
        study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-second-s0.jsonl \
          --candidate 'default=preset:all-layers,epochs:null' \
          --candidate 'u10=preset:all-layers,epochs:null,universal_radius:0.1'
      done
    fi
    ;;
  twenty-second-classifier)  # twenty-second round, last: the distance on the final classifier only with the shared
    # perturbation (`classifier-only-u10`) on the study's models, and radius 0.1 with the issue's 800 images on the
    # user ResNet-18 (seed 0), after twenty-second-more a (run after it, in the same process)
    for run in mnv3l-sig mnv2-badnets cnn-blended-s1 prn-wanet rn18-blended vgg-a2a-badnets; do
      study $RUNS/$run --final-only --seed 0 --out $RUNS/twenty-second-s0.jsonl \
        --candidate 'classifier-only-u10=preset:all-layers,epochs:null,layers:auto,universal_radius:0.1'
    done
    user_models purify --preset all-layers resnet18 --images 800 --params '{"universal_radius": 0.1}' --label u10
    user_models purify --preset all-layers resnet18 --images 800 --params '{"layers": "auto", "universal_radius": 0.1}' --label classifier-only-u10
    ;;
  twenty-second-seed1)  # twenty-second round, after the note: the default and radius 0.1 at a second retain draw on the
    # four smaller study models; `twenty-second-seed1 a` and `b` side by side
    if [ "${2:-a}" = a ]; then runs="cnn-blended-s1 prn-wanet"; else runs="vgg-blended-s0 vgg-a2a-badnets"; fi
    for run in $runs; do
      study $RUNS/$run --final-only --seed 1 --out $RUNS/twenty-second-s1.jsonl \
        --candidate 'default=preset:all-layers,epochs:null' \
        --candidate 'u10=preset:all-layers,epochs:null,universal_radius:0.1'
    done
    ;;
  twenty-first-800)  # twenty-first round, last: the issue's 800 clean images on the user ResNet-18 (seed 0): the
    # default, `size-median` and `reference` at 12 epochs
    user_models purify --preset all-layers resnet18 --images 800
    user_models purify --preset all-layers resnet18 --images 800 --params '{"layer_weighting": "size-median"}' --label size-median
    user_models purify resnet18 --images 800 --preset reference --epochs 12 --params "$TWELVE" \
      --label reference-12
    # and `reference` at 12 epochs with 3,000 images on this round's retrained user models (the ResNet-18, the Keras CNN)
    user_models purify resnet18 keras-cnn --images 3000 --preset reference --epochs 12 \
      --params "$TWELVE" --label reference-12
    ;;
  twentieth-augment)  # twentieth round, after twentieth-resnet (random crops cleared the user ResNet-18): the default
    # with the reference code's crop augmentation (`augment: true`) on the dev part, seed 0 (stopped there: it lost
    # 5.75–10.20 points and failed the VGG Blended)
    study $DEV --final-only --seed 0 --out $RUNS/twentieth-augment-dev-s0.jsonl \
      --candidate 'augment=preset:all-layers,epochs:null,augment:true'
    ;;
  twentieth-table)  # twentieth round's tables
    user_models table
    $PY benchmarks/d3_probes.py twice $RUNS/twentieth-twice.jsonl
    $PY benchmarks/d3_probes.py twice $RUNS/twentieth-then-reference.jsonl
    $PY benchmarks/d3_probes.py twice $RUNS/twentieth-alllayers-then-reference.jsonl
    $PY benchmarks/d3_probes.py angles $RUNS/twentieth-angles.jsonl
    $PY benchmarks/d3_probes.py norms $RUNS/twentieth-norms.jsonl
    ;;
  eighteenth-ssba-models)  # eighteenth round, last: check models with a sample-specific invisible trigger (SSBA), which
    # the default study never had, trained after the round's candidate was set aside (nothing tuned on them);
    # `eighteenth-ssba-models a` and `b` side by side
    # (on 30,000 training images the VGG, 4 epochs, and the LeNet-5, 10, did not implant it: 7.61 and 3.87 % ASR; their
    # directories were removed and all three were trained on all 60,000, as the cpu-vgg.yaml grid's SSBA cell)
    if [ "${2:-a}" = a ]; then
      attack vgg-ssba-18 ssba --model small_vgg --width 16 --epochs 4 --batch-size 32 --no-augment --test-subset 2000 --seed 80 --target 4
      attack lenet-ssba-18 ssba --model lenet --epochs 10 --lr 0.01 --batch-size 64 --test-subset 2000 --seed 82 --target 3 --no-augment
    fi
    if [ "${2:-b}" = b ]; then
      attack prn-ssba-18 ssba --model preactresnet18 --width 0.125 --epochs 6 --batch-size 128 --test-subset 2000 --seed 81 --target 7
    fi
    ;;
  eighteenth-ssba|eighteenth-trigger)  # eighteenth round, once on each SSBA model (`eighteenth-ssba RUN_DIR...`) or
    # trigger-form model (`eighteenth-trigger RUN_DIR...`): the default (seeds 0, 1; 500 images at seed 0), the
    # faithful presets and FT-SAM (seed 0, 3,000 images)
    study "${@:2}" --final-only --out $RUNS/$1-3000.jsonl "${seventh_floor[@]}" \
      "${sixth_reference[@]}" "${sixth_paper[@]}" "${sixth_ft_sam[@]}"
    study "${@:2}" --final-only --seed 1 --out $RUNS/$1-3000-s1.jsonl "${seventh_floor[@]}"
    study "${@:2}" --final-only --count 500 --out $RUNS/$1-500.jsonl "${seventh_floor[@]}"
    ;;
  eighteenth-1000)  # eighteenth round, after the others: the default with 1,000 images (seed 0) on the round's check
    # models; `eighteenth-1000 RUN_DIR...`
    study "${@:2}" --final-only --count 1000 --out $RUNS/eighteenth-1000.jsonl "${seventh_floor[@]}"
    ;;
  eighteenth-trigger-models)  # eighteenth round, last: triggers of known kinds in forms the study never had, trained
    # after everything above (nothing tuned on them): a BadNets patch twice the side on a small VGG (`a`), a faint
    # noise pattern blended at 0.15 into a small CNN (`b`); side by side
    if [ "${2:-a}" = a ]; then
      attack vgg-badnets6-18 badnets --model small_vgg --width 16 --epochs 4 --batch-size 32 --no-augment --train-subset 30000 --test-subset 2000 --seed 83 --target 1 --param patch=6
    fi
    # then two LeNet-5s without normalisation (the default's weakest family) with triggers no LeNet had had:
    # WaNet (`c`) and SIG (`d`), on all 60,000 training images
    if [ "${2:-c}" = c ]; then
      attack lenet-wanet-18 wanet --model lenet --epochs 10 --lr 0.01 --batch-size 64 --test-subset 2000 --seed 85 --target 2 --no-augment
    fi
    if [ "${2:-d}" = d ]; then
      attack lenet-sig-18 sig --model lenet --epochs 10 --lr 0.01 --batch-size 64 --test-subset 2000 --seed 86 --target 5 --no-augment --poison-rate 0.08
    fi
    if [ "${2:-b}" = b ]; then
      attack cnn-noise-18 blended --model small_cnn --width 16 --epochs 4 --batch-size 32 --no-augment --train-subset 30000 --test-subset 2000 --seed 84 --target 9 --param pattern='"noise"' --param alpha=0.15 --param test_alpha=0.15
    fi
    ;;
  eighteenth-flat)  # eighteenth round, a probe: the ninth round's lead, input pruning on the Linear over a flattened map
    $PY benchmarks/d3_probes.py flat-prune $RUNS/eighteenth-flat.jsonl $RUNS/lenet-badnets-17 $RUNS/lenet-blended-17 \
      $RUNS/tutorial-badnets $RUNS/tutorial-blended
    ;;
  eighteenth-head)  # eighteenth round: the default and `head` (its distance and its warm start over the whole fully
    # connected head: layers=linear-head, init_layers=linear-head) on models without BatchNorm whose head has several Linears;
    # `eighteenth-head COUNT SEED RUN_DIR...`
    study "${@:4}" --final-only --count "$2" --seed "$3" --out $RUNS/eighteenth-head-$2-s$3.jsonl \
      "${seventh_floor[@]}" "${eighteenth_head[@]}"
    ;;
  seventeenth-average)  # seventeenth round: the mean of the weights over the run's last half / quarter of steps
    # (`average`, stochastic weight averaging), the eleventh round's development part, `seventeenth-average SEEDS`
    for seed in "${@:2}"; do
      study $DEV $RUNS/cnn-plain-blended $RUNS/cnn-gn-badnets --final-only --seed "$seed" \
        --out $RUNS/seventeenth-average-dev-s$seed.jsonl "${seventeenth_average[@]}"
    done
    ;;
  sixteenth)  # sixteenth round, once on each recipe model: the default and the default with its logits at their
    # retain temperature (seeds 0, 1), the faithful presets and FT-SAM (seed 0, 3,000 images); the default and the
    # scaled one with 500 images (seed 0); `sixteenth RUN_DIR...`
    study "${@:2}" --final-only --out $RUNS/sixteenth-3000.jsonl "${seventh_floor[@]}" "${sixteenth_scaled[@]}"
    study "${@:2}" --final-only --seed 1 --out $RUNS/sixteenth-3000-s1.jsonl "${seventh_floor[@]}" "${sixteenth_scaled[@]}"
    study "${@:2}" --final-only --count 500 --out $RUNS/sixteenth-500.jsonl "${seventh_floor[@]}" "${sixteenth_scaled[@]}"
    study "${@:2}" --final-only --out $RUNS/sixteenth-3000.jsonl "${sixth_reference[@]}" "${sixth_paper[@]}" \
      "${sixth_ft_sam[@]}"
    ;;
  fifteenth-probes)  # fifteenth round: channel Lipschitz pruning, universal perturbations fitted on the purified
    # models, a function-identical rescaling and the angles the default turns each weight by, on the BatchNorm study
    # models (benchmarks/d3_probes.py);
    # `fifteenth-probes clp|uap|rescale|angles|momentum RUN_DIR...` (momentum: slow BatchNorm momenta, with and
    # without the default's bn_recalibrate rule)
    case ${2:-} in
      clp) $PY benchmarks/d3_probes.py clp $RUNS/fifteenth-clp.jsonl "${@:3}" ;;
      uap) $PY benchmarks/d3_probes.py uap $RUNS/fifteenth-uap.jsonl "${@:3}" ;;
      rescale) $PY benchmarks/d3_probes.py rescale $RUNS/fifteenth-rescale.jsonl 0.5,2 "${@:3}" ;;
      angles) $PY benchmarks/d3_probes.py angles $RUNS/fifteenth-angles.jsonl "${@:3}" ;;
      momentum) $PY benchmarks/d3_probes.py momentum $RUNS/fifteenth-momentum.jsonl 0.001,none "${@:3}" ;;
      logits) $PY benchmarks/d3_probes.py logits $RUNS/sixteenth-logits.jsonl 0.25,4 "${@:3}" ;;
      temperature) $PY benchmarks/d3_probes.py temperature $RUNS/sixteenth-temperature.jsonl "${@:3}" ;;
      *) echo "fifteenth-probes needs clp, uap, rescale, angles, momentum, logits or temperature; got '${2:-}'" >&2
         exit 2 ;;
    esac
    ;;
  eleventh-why)  # eleventh round: how close each suspect classifier already is to the retain set's centred class
    # means (cosine, whole weight and per class), and what the nearest-class-mean classifier on the suspect's
    # unchanged features scores (retain accuracy; ASR on 1,000 triggered test images)
    $PY - ${@:2} <<'PY'
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from distox.defenses.d3 import class_means, linear_classifier
from distox.defenses.probe import layer_input
from distox.experiment import load_run
from distox.models.selection import owning_module

torch.set_num_threads(1)
print("| model | cosine | per class | NCM retain ACC | NCM ASR |\n|---|---|---|---|---|")
for d in sys.argv[1:]:
    run, cpu = load_run(Path(d)), torch.device("cpu")
    retain, backdoor = run.retain(count=3000, seed=0), run.backdoor_test_set()
    model = run.model.eval()
    name, w = next(iter(linear_classifier(model, retain.x[:1]).items()))
    layer = owning_module(model, name)
    means, _ = class_means(model, layer, retain, cpu)
    ncm = (means - means.mean(0)).float()
    ncm = ncm * w.detach().norm() / ncm.norm()
    bias = layer.bias.detach() if layer.bias is not None else 0.0
    feats = torch.cat([layer_input(model, layer, retain.x[i:i + 500]) for i in range(0, len(retain.x), 500)])
    trig = layer_input(model, layer, backdoor.x[:1000])
    acc = float(((feats @ ncm.T + bias).argmax(1) == retain.y).float().mean() * 100)
    asr = float(((trig @ ncm.T + bias).argmax(1) == backdoor.target[:1000]).float().mean() * 100)
    cos = F.cosine_similarity(ncm.flatten(), w.detach().flatten(), 0)
    rows = " ".join(f"{float(c):.2f}" for c in F.cosine_similarity(ncm, w.detach(), 1))
    print(f"| {Path(d).name} | {cos:.2f} | {rows} | {acc:.1f} | {asr:.1f} |", flush=True)
PY
    ;;
  tenth-sizes)  # tenth round, once: the default with 500 and 1,000 retain images (seed 0)
    for n in 500 1000; do
      study $RUNS/tutorial-badnets $RUNS/tutorial-blended --final-only --count $n --out $RUNS/tenth-$n.jsonl "${seventh_floor[@]}"
    done
    ;;
  bnfed)  # eighth round: does leaving out the weights no BatchNorm re-normalises (squeeze-and-excitation
    # convs, an MLP head's hidden Linear; PreAct's shortcut convs and last conv) help where the default's
    # all-layer distance covers them?
    for seed in "${@:2}"; do
      for n in 500 3000; do
        study $RUNS/mnv3-lf $RUNS/regnet-badnets $RUNS/prn-wanet --final-only --seed "$seed" --count $n \
          --out $RUNS/bnfed-$n-s$seed.jsonl --candidate "bnfed=preset:all-layers,epochs:null,layers:batchnorm-fed"
        # the default's cells the seventh round did not run on the two new check models
        study $RUNS/mnv3-lf $RUNS/regnet-badnets --final-only --seed "$seed" --count $n \
          --out $RUNS/bnfed-$n-s$seed.jsonl "${seventh_floor[@]}"
      done
    done
    ;;
  table)  # `table sixth`: the sixth round's tables and later ones; `table seventh`: the seventh round's and
    # later ones; `table eighth`: the eighth round's and the ninth's
    if [ "${2:-}" != eighth ]; then
    if [ "${2:-}" != seventh ]; then
    if [ "${2:-}" != sixth ]; then
    study --table $RUNS/final.jsonl --check $CHECK_NAMES
    study --table $RUNS/final-500.jsonl $RUNS/final-1000.jsonl --check $CHECK_NAMES
    study --table $RUNS/final-seed1.jsonl --check $CHECK_NAMES
    study --table $RUNS/lmd-s0.jsonl $RUNS/lmd-s1.jsonl
    study --table $RUNS/explore.jsonl
    study --table $RUNS/screen.jsonl
    study --table $RUNS/screen-500.jsonl --check vit-blended
    study --table $RUNS/stem-b-s0.jsonl $RUNS/stem-b-s1.jsonl $RUNS/stem-b-s2.jsonl
    study --table $RUNS/distill-a-s0.jsonl $RUNS/distill-a-s1.jsonl $RUNS/distill-a-s2.jsonl \
      $RUNS/distill-b-s0.jsonl $RUNS/distill-b-s1.jsonl $RUNS/distill-b-s2.jsonl
    study --table $RUNS/small-s0.jsonl $RUNS/small-s1.jsonl
    study --table $RUNS/bias-a-s0.jsonl $RUNS/bias-a-s1.jsonl $RUNS/bias-a-s2.jsonl \
      $RUNS/bias-b-s0.jsonl $RUNS/bias-b-s1.jsonl $RUNS/bias-b-s2.jsonl
    # fourth round: the overlay (dev and check), fine-tuning after D3, fewer images with the overlay
    study --table $RUNS/blend-dev-s0.jsonl $RUNS/blend-dev-s1.jsonl $RUNS/blend-dev-s2.jsonl \
      $RUNS/blend-check-s0.jsonl $RUNS/blend-check-s1.jsonl --check $CHECK_NAMES
    study --table $RUNS/tail-s0.jsonl $RUNS/tail-s1.jsonl $RUNS/tail-s2.jsonl --check vit-blended
    study --table $RUNS/blend-500.jsonl $RUNS/blend-1000.jsonl --check $CHECK_NAMES
    # fifth round
    study --table $RUNS/fifth-s0.jsonl $RUNS/fifth-s1.jsonl $RUNS/fifth-s2.jsonl --check $CHECK_NAMES
    # the new default (noise-blend) against the fourth round's candidates on the same 20 cells
    study --table $RUNS/blend-dev-s0.jsonl $RUNS/blend-dev-s1.jsonl $RUNS/blend-dev-s2.jsonl $RUNS/blend-check-s0.jsonl \
      $RUNS/blend-check-s1.jsonl $RUNS/fifth-s0.jsonl $RUNS/fifth-s1.jsonl $RUNS/fifth-s2.jsonl --check $CHECK_NAMES \
      --only noise-blend default-blend d3-default d3-reference d3-paper ft-sam
    fi
    # sixth round: the models without BatchNorm, the plain CNN's epochs and lr, the lr step
    study --table $RUNS/sixth-s0.jsonl $RUNS/sixth-s1.jsonl $RUNS/sixth-s2.jsonl $RUNS/sixth-check-s0.jsonl \
      $RUNS/sixth-check-s1.jsonl --check vit-blended cnn-plain-badnets-aug vit-a2a-badnets
    study --table $RUNS/probe-plain-s0.jsonl $RUNS/probe-plain-s1.jsonl $RUNS/probe-plain-s2.jsonl
    study --table $RUNS/lr-s0.jsonl $RUNS/lr-s1.jsonl
    study --table $RUNS/nobn-lr-s0.jsonl $RUNS/nobn-lr-s1.jsonl $RUNS/nobn-lr-s2.jsonl --check vit-blended cnn-plain-badnets-aug
    # the default as shipped (its BatchNorm rule on) against the default before, on the earlier 20 cells and on all 31
    old20="$RUNS/blend-dev-s0.jsonl $RUNS/blend-dev-s1.jsonl $RUNS/blend-dev-s2.jsonl $RUNS/blend-check-s0.jsonl
      $RUNS/blend-check-s1.jsonl $RUNS/fifth-s2.jsonl" shipped="$RUNS/shipped-s0.jsonl $RUNS/shipped-s1.jsonl $RUNS/shipped-s2.jsonl"
    sixth="$RUNS/sixth-s0.jsonl $RUNS/sixth-s1.jsonl $RUNS/sixth-s2.jsonl $RUNS/sixth-check-s0.jsonl $RUNS/sixth-check-s1.jsonl"
    study $DEV $CHECK --table $shipped $old20 --check $CHECK_NAMES --as previous-default=default-blend \
      --only default-shipped previous-default d3-reference d3-paper ft-sam
    study $DEV $CHECK $NOBN $RUNS/cnn-plain-badnets-aug --table $shipped $old20 $sixth --check $CHECK_NAMES cnn-plain-badnets-aug \
      --as previous-default=default-blend,default \
      --only default-shipped previous-default d3-reference d3-paper
    # fewer images: the earlier eight models, then the four without BatchNorm
    study $DEV $CHECK --table $RUNS/shipped-500.jsonl $RUNS/shipped-1000.jsonl $RUNS/blend-500.jsonl $RUNS/blend-1000.jsonl \
      --check $CHECK_NAMES --as previous-default=default-blend --only default-shipped previous-default
    # 500 images at 3x and 6x the epochs (the eleven models of shipped-500.jsonl)
    study $DEV $CHECK $NOBN --table $RUNS/shipped-500.jsonl $RUNS/small-epochs-36.jsonl $RUNS/small-epochs-72.jsonl
    study $NOBN $RUNS/vit-blended --table $RUNS/shipped-500.jsonl $RUNS/shipped-1000.jsonl $RUNS/sixth-500.jsonl \
      $RUNS/sixth-1000.jsonl --as previous-default=default --only default-shipped previous-default d3-paper head-blend
    fi
    # seventh round: floor600 is the default as shipped now, default-shipped the sixth round's (no floor)
    names=(--as default-with-floor=floor600 default-without-floor=default-shipped)
    for n in 500 1000; do
      study --table $RUNS/seventh-$n-s0.jsonl $RUNS/seventh-$n-s1.jsonl $RUNS/seventh-$n-s2.jsonl --check vit-a2a-badnets \
        "${names[@]}"
    done
    study --table $RUNS/seventh-check-500.jsonl $RUNS/seventh-check-1000.jsonl $RUNS/seventh-check-3000.jsonl \
      $RUNS/seventh-check-3000-s1.jsonl --check shufflenet-blended mnv3-lf regnet-badnets "${names[@]}"
    study --table $RUNS/seventh-check-3000.jsonl $RUNS/seventh-check-3000-s1.jsonl "${names[@]}"  # 3,000 only: DER per model
    fi
    # eighth round: the conv-head models (floor600 is the default as shipped)
    for n in 3000 500 1000; do
      study --table $RUNS/eighth-$n-s0.jsonl $RUNS/eighth-$n-s1.jsonl --as default=floor600
    done
    study --table $RUNS/eighth-check-3000.jsonl $RUNS/eighth-check-500.jsonl $RUNS/eighth-check-1000.jsonl \
      --as default=floor600
    study --table $RUNS/mlp-3000.jsonl $RUNS/mlp-3000-s1.jsonl $RUNS/mlp-500.jsonl $RUNS/mlp-1000.jsonl --as default=floor600
    study --table $RUNS/mlp-explore-s0.jsonl $RUNS/mlp-explore-s1.jsonl $RUNS/mlp-explore-s2.jsonl --as default=floor600
    study --table $RUNS/mlp-check.jsonl --as default=floor600
    study --table $RUNS/mlp-rule-s0.jsonl $RUNS/mlp-rule-s1.jsonl $RUNS/mlp-rule-s2.jsonl --as default=floor600
    study --table $RUNS/mlp-rule-check-3000.jsonl $RUNS/mlp-rule-check-500.jsonl --as default=floor600
    # the BatchNorm-fed distance against the default (the PreAct's default rows: the shipped and seventh-round files)
    study $RUNS/mnv3-lf $RUNS/regnet-badnets $RUNS/prn-wanet --table $RUNS/bnfed-500-s0.jsonl $RUNS/bnfed-500-s1.jsonl \
      $RUNS/bnfed-500-s2.jsonl $RUNS/seventh-500-s0.jsonl $RUNS/seventh-500-s1.jsonl $RUNS/seventh-500-s2.jsonl \
      --as default=floor600 --only default bnfed
    study $RUNS/mnv3-lf $RUNS/regnet-badnets $RUNS/prn-wanet --table $RUNS/bnfed-3000-s0.jsonl $RUNS/bnfed-3000-s1.jsonl \
      $RUNS/bnfed-3000-s2.jsonl $RUNS/shipped-s0.jsonl $RUNS/shipped-s1.jsonl $RUNS/shipped-s2.jsonl \
      --as default=floor600,default-shipped --only default bnfed
    # ninth round: input pruning on the MLPs (prune = the default as shipped now; no-prune = the eighth round's)
    study --table $RUNS/ninth-s0.jsonl $RUNS/ninth-s1.jsonl $RUNS/ninth-s2.jsonl $RUNS/ninth-500.jsonl $RUNS/ninth-1000.jsonl
    study --table $RUNS/ninth-tolerance-s0.jsonl $RUNS/ninth-tolerance-s1.jsonl $RUNS/ninth-tolerance-s2.jsonl \
      $RUNS/ninth-s0.jsonl $RUNS/ninth-s1.jsonl $RUNS/ninth-s2.jsonl
    study --table $RUNS/ninth-light-s0.jsonl $RUNS/ninth-light-s1.jsonl $RUNS/ninth-light-s2.jsonl $RUNS/ninth-s0.jsonl \
      $RUNS/ninth-s1.jsonl $RUNS/ninth-s2.jsonl
    study --table $RUNS/ninth-check-s0.jsonl $RUNS/ninth-check-s1.jsonl $RUNS/ninth-check-500.jsonl \
      $RUNS/ninth-check-1000.jsonl --check mlp-sig-aug mlp-bn-lf mlp-badnets-aug mlp-bn-a2a-badnets
    study --table $RUNS/lenet-s0.jsonl $RUNS/lenet-s1.jsonl $RUNS/lenet-s2.jsonl $RUNS/lenet-500.jsonl $RUNS/lenet-1000.jsonl \
      --as default=floor600 --check lenet-badnets lenet-bn-badnets
    study --table $RUNS/lenet-explore-s0.jsonl $RUNS/lenet-explore-s1.jsonl $RUNS/lenet-explore-s2.jsonl
    study --table $RUNS/lenet-blended-s0.jsonl $RUNS/lenet-blended-s1.jsonl $RUNS/lenet-blended-s2.jsonl --as default=floor600
    # the four LeNets together
    study --table $RUNS/lenet-blended-s0.jsonl $RUNS/lenet-blended-s1.jsonl $RUNS/lenet-blended-s2.jsonl $RUNS/lenet-s0.jsonl \
      $RUNS/lenet-s1.jsonl $RUNS/lenet-s2.jsonl --as default=floor600 --only default d3-reference d3-paper
    ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
