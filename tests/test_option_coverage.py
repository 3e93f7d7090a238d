"""Every command-line option and every TrainConfig and DataConfig field has a test that shows its effect.

``OPTION_TESTS`` maps each ``(command, option)`` of ``resnet_lab.cli.build_parser()`` (positional
arguments by their name) and each ``("TrainConfig", field)`` and ``("DataConfig", field)`` to the
tests that prove what it does, against the same run (or load) without it. A new option or field
without an entry fails here, naming it; an entry whose test was renamed or removed fails too.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from functools import cache
from pathlib import Path

from resnet_lab.cli import build_parser
from resnet_lab.data import DataConfig
from resnet_lab.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

OPTS = "tests/test_cli_options.py::"
CLI = "tests/test_cli.py::"
DIST = "tests/distributed/test_distributed.py::"
FT = "tests/transfer/test_head_finetune.py::"
LOOP = "tests/train/test_loop.py::"
FAULTS = "tests/train/test_faults.py::"
CAM = "tests/deploy/test_cam.py::"
REPORT = "tests/analysis/test_report.py::"
LRF = "tests/train/test_lr_finder.py::"
BOARD = "tests/train/test_tensorboard.py::"
EMA = "tests/train/test_ema.py::"
LOOKAHEAD = "tests/train/test_lookahead.py::"
NORM_LR = "tests/train/test_norm_lr_scale.py::"
RESIZE = "tests/train/test_progressive_resize.py::"
MIX = "tests/train/test_mixing.py::"
SAM = "tests/train/test_sam.py::"
RECIPE_CLI = "tests/train/test_recipe_cli.py::test_cli_train_and_finetune_hand_the_recipe_flags_to_the_trainer"
RECIPE_RESUME = (EMA + "test_resume_after_interrupt_ends_with_the_weights_of_an_uninterrupted_run",
                 EMA + "test_resume_with_a_different_recipe_option_is_refused_naming_it")
FLIP = "tests/data/test_alternating_flip.py::"
DATA_CONFIG = "tests/data/test_config.py::"
LOADERS = "tests/data/test_loaders.py::"
FOLDERS = "tests/data/test_folder_and_cifar.py::"
BAD_DATA = "tests/data/test_bad_input.py::"
ERASING = "tests/data/test_random_erasing.py::"
GIVEN_STATS = DATA_CONFIG + "test_given_mean_and_std_normalize_the_crops_and_keep_every_other_loader_option"
EVAL_BATCH = DATA_CONFIG + "test_eval_batch_size_sets_the_test_batches_and_leaves_the_training_ones"
WHITEN = "tests/models/test_whitening.py::"

# Training flags shared by `train` and `finetune`: their effect is shown through `train`; that
# finetune hands each one to the trainer and the data loader exactly as train does is
# FINETUNE_SAME_AS_TRAIN.
TRAINING = {
    "--dataset": OPTS + "test_dataset_and_data_dir_train_on_the_folders_classes",
    "--data-dir": OPTS + "test_dataset_and_data_dir_train_on_the_folders_classes",
    "--download": OPTS + "test_download_fetches_missing_cifar_into_data_dir_for_train_and_evaluate",
    "--image-size": OPTS + "test_image_size_resizes_the_training_images",
    "--workers": (OPTS + "test_workers_sets_the_decoding_processes_of_folder_loaders",
                  "tests/data/test_loaders.py::test_streaming_loader_decodes_in_num_workers_processes"),
    "--epochs": OPTS + "test_epochs_sets_the_number_of_passes",
    "--batch-size": OPTS + "test_batch_size_sets_the_training_batch",
    "--lr": OPTS + "test_lr_sets_the_rate_of_every_sgd_update",
    "--optimizer": OPTS + "test_optimizer_adamw_keeps_adams_moments_and_defaults_to_lr_1e_3",
    "--momentum": OPTS + "test_momentum_sets_the_momentum_of_every_sgd_update",
    "--no-nesterov": OPTS + "test_no_nesterov_uses_plain_momentum",
    "--weight-decay": OPTS + "test_weight_decay_decays_conv_and_linear_weights_only",
    "--schedule": OPTS + "test_schedule_sets_the_lr_of_each_step_to_its_closed_form",
    "--warmup-epochs": OPTS + "test_warmup_epochs_ramps_the_lr_linearly_over_that_many_epochs",
    "--label-smoothing": OPTS + "test_label_smoothing_trains_on_the_smoothed_cross_entropy",
    "--grad-clip": OPTS + "test_grad_clip_scales_the_global_gradient_norm_down_to_the_limit",
    "--no-augment": OPTS + "test_no_augment_feeds_the_stored_images_unchanged",
    "--random-erasing": (OPTS + "test_random_erasing_erases_one_rectangle_per_image_to_the_mean",
                         CLI + "test_random_erasing_flag_is_checked_and_trains"),
    "--flip": (FLIP + "test_cli_flip_alternate_reaches_the_training_loader",
               FLIP + "test_alternate_flips_a_random_half_then_each_image_the_opposite_of_the_epoch_before",
               FLIP + "test_random_flip_repeats_some_images_view_in_consecutive_epochs"),
    "--crop-padding": (OPTS + "test_crop_padding_zero_flips_without_shifting",
                       OPTS + "test_crop_padding_sets_the_largest_shift"),
    "--subset": OPTS + "test_subset_trains_on_n_images_stratified_by_class",
    "--val-fraction": OPTS + "test_val_fraction_holds_out_that_share_and_evaluate_and_finetune_hold_out_the_same",
    "--seed": OPTS + "test_seed_fixes_the_initial_weights_and_the_data_order",
    "--device": (OPTS + "test_device_names_where_the_model_trains",
                 OPTS + "test_device_cuda_runs_there_or_says_it_is_missing"),
    "--channels-last": OPTS + "test_channels_last_trains_model_and_batches_in_nhwc",
    "--bf16": OPTS + "test_bf16_runs_the_training_forward_under_bfloat16_autocast",
    "--fp16": ("tests/train/test_amp.py::test_fp16_on_a_cpu_is_refused_with_the_way_out",
               "tests/train/test_amp.py::test_an_enabled_scaler_skips_a_step_whose_scaled_gradients_overflow_and_backs_off"),
    "--compile": OPTS + "test_compile_trains_through_torch_compile",
    "--deterministic": (OPTS + "test_deterministic_turns_on_deterministic_algorithms_while_training",
                        CLI + "test_sigterm_saves_the_position_and_resume_finishes_the_run"),
    "--checkpoint-segments": OPTS + "test_checkpoint_segments_saves_fewer_activations_during_training",
    # The recipe options (docs/RECIPES.md): each against float64 or hand-written references and the run
    # without it; RECIPE_CLI shows train and finetune hand each flag to TrainConfig.
    "--ema": (EMA + "test_ema_weights_equal_a_float64_recurrence_over_the_recorded_raw_weights",
              EMA + "test_reported_test_accuracy_and_best_file_are_those_of_the_ema",
              EMA + "test_ema_outside_0_1_is_refused_naming_the_flag", *RECIPE_RESUME, RECIPE_CLI),
    "--lookahead": (LOOKAHEAD + "test_lookahead_equals_a_hand_written_loop_over_torch_sgd",
                    LOOKAHEAD + "test_lookahead_refuses_a_negative_k_and_alpha_outside_0_1", *RECIPE_RESUME,
                    RECIPE_CLI),
    "--lookahead-alpha": (LOOKAHEAD + "test_lookahead_equals_a_hand_written_loop_over_torch_sgd",
                          LOOKAHEAD + "test_lookahead_alpha_1_is_the_inner_optimizer_alone",
                          LOOKAHEAD + "test_lookahead_refuses_a_negative_k_and_alpha_outside_0_1", RECIPE_CLI),
    "--norm-lr-scale": (
        NORM_LR + "test_norm_lr_scale_multiplies_the_lr_of_exactly_the_norm_layers_parameters_times_lr_scale",
        NORM_LR + "test_norm_lr_scale_covers_every_norm_of_a_zoo_model",
        NORM_LR + "test_in_training_the_norm_parameters_move_f_times_as_far_on_the_first_step_and_the_rest_alike",
        NORM_LR + "test_norm_lr_scale_negative_or_not_finite_is_refused_naming_the_flag", RECIPE_CLI),
    "--progressive-resize": (RESIZE + "test_each_epoch_trains_at_the_closed_form_side_and_evaluation_is_at_full_size",
                             RESIZE + "test_without_progressive_resize_every_epoch_trains_at_full_size",
                             RESIZE + "test_a_start_side_below_4_is_refused_naming_the_flag",
                             RESIZE + "test_a_start_side_not_below_the_images_side_is_refused_before_training",
                             RECIPE_CLI),
    "--mixup": (MIX + "test_mixup_blends_every_image_with_its_partner_in_the_share_lam",
                MIX + "test_lam_follows_beta_alpha_alpha",
                MIX + "test_the_loop_trains_on_the_mixed_batch_with_the_soft_target_cross_entropy",
                MIX + "test_without_mixing_the_model_trains_on_the_loaders_batches_and_ends_elsewhere",
                MIX + "test_a_bad_alpha_is_refused_naming_the_flag", *RECIPE_RESUME, RECIPE_CLI),
    "--cutmix": (MIX + "test_cutmix_pastes_one_rectangle_of_the_partner_and_lam_is_the_area_left",
                 MIX + "test_with_both_on_each_batch_uses_one_of_the_two_with_equal_odds",
                 MIX + "test_the_loop_trains_on_the_mixed_batch_with_the_soft_target_cross_entropy",
                 MIX + "test_without_mixing_the_model_trains_on_the_loaders_batches_and_ends_elsewhere",
                 MIX + "test_a_bad_alpha_is_refused_naming_the_flag", *RECIPE_RESUME, RECIPE_CLI),
    "--sam": (SAM + "test_sam_equals_a_float64_hand_written_loop_and_differs_from_plain_sgd",
              SAM + "test_the_ascent_moves_the_training_weights_rho_along_the_gradient_and_restores_everything_exactly",
              SAM + "test_sam_negative_or_not_finite_is_refused_naming_the_flag",
              SAM + "test_sam_with_fp16_is_refused_with_the_way_out", *RECIPE_RESUME, RECIPE_CLI),
    "--out": OPTS + "test_out_writes_the_run_directory_and_nothing_is_written_without_it",
    "--resume": (CLI + "test_sigterm_saves_the_position_and_resume_finishes_the_run",
                 CLI + "test_resume_of_a_finished_run_says_how_to_train_further"),
    "--no-progress": OPTS + "test_no_progress_hides_the_progress_bar",
    "--no-plots": (OPTS + "test_no_plots_draws_neither_plot_changes_nothing_else_and_a_resume_without_it_draws_them",
                   OPTS + "test_finetune_hands_each_training_flag_to_the_trainer_as_train_does"),
    "--eval-every": (OPTS + "test_eval_every_evaluates_every_nth_and_the_last_epoch_and_changes_nothing_else",
                     OPTS + "test_a_run_split_by_stop_after_evaluates_and_keeps_the_best_epoch_as_the_whole_run_does",
                     OPTS + "test_eval_every_below_1_is_refused_in_one_line_naming_the_flag",
                     FAULTS + "test_an_epoch_that_eval_every_skips_is_still_checked_for_divergence"),
    "--tensorboard": (BOARD + "test_cli_train_and_finetune_with_tensorboard_log_every_epoch_and_bn_layer",
                      BOARD + "test_tensorboard_without_the_package_says_how_to_install_it"),
    "--stop-after": (FAULTS + "test_stop_after_pauses_the_schedule_and_resume_ends_where_an_uninterrupted_run_does",
                     DIST + "test_torchrun_with_sync_bn_matches_one_process_on_the_global_batch_and_resumes_in_one_process"),
    # One process: the note. Under torchrun (the distributed tests): sync-bn matches one process on
    # the global batch, and without it the statistics differ; scale-lr is Goyal et al.'s rule.
    "--sync-bn": (OPTS + "test_sync_bn_and_scale_lr_in_one_process_say_they_need_torchrun",
                  DIST + "test_torchrun_with_sync_bn_matches_one_process_on_the_global_batch_and_resumes_in_one_process",
                  DIST + "test_without_sync_bn_running_statistics_differ_from_one_process"),
    "--scale-lr": (OPTS + "test_sync_bn_and_scale_lr_in_one_process_say_they_need_torchrun",
                   DIST + "test_scale_lr_is_the_linear_scaling_rule_with_warmup_of_goyal_et_al"),
}
ENSEMBLE = OPTS + "test_evaluate_an_ensemble_with_best_and_tta_averages_every_models_best_weights_over_both_views"
TORCHRUN_ONLY = ("--sync-bn", "--scale-lr")  # train's; finetune runs in one process and does not take them
FINETUNE_SAME_AS_TRAIN = OPTS + "test_finetune_hands_each_training_flag_to_the_trainer_as_train_does"
FINETUNE_OWN = {
    **{flag: RECIPE_CLI for flag in ("--ema", "--lookahead", "--lookahead-alpha", "--norm-lr-scale",
                                     "--progressive-resize", "--mixup", "--cutmix", "--sam")},
    "--flip": FLIP + "test_cli_flip_alternate_reaches_the_training_loader",
    "--random-erasing": OPTS + "test_random_erasing_erases_one_rectangle_per_image_to_the_mean",
    "--resume": (OPTS + "test_finetune_resume_continues_an_interrupted_run",
                 FT + "test_resume_with_another_strategy_is_one_line_and_changes_nothing"),
    "--fp16": OPTS + "test_finetune_fp16_on_a_cpu_is_refused_as_train_refuses_it",
    "--seed": (FINETUNE_SAME_AS_TRAIN, OPTS + "test_finetune_seed_draws_the_new_layers_weights"),
    "--stop-after": (FINETUNE_SAME_AS_TRAIN,
                     FT + "test_stop_after_pauses_the_main_phase_and_the_frozen_phase_runs_whole"),
    "--tensorboard": BOARD + "test_cli_train_and_finetune_with_tensorboard_log_every_epoch_and_bn_layer",
}

OPTION_TESTS: dict[tuple[str, str], str | tuple[str, ...]] = {
    ("models", "pattern"): CLI + "test_models_lists_names_with_paper_parameter_counts",

    ("summary", "model"): OPTS + "test_summary_counts_the_named_models_parameters",
    ("summary", "--input-size"): OPTS + "test_summary_input_size_sets_the_input_shape",
    ("summary", "--num-classes"): OPTS + "test_summary_num_classes_sets_the_classifier_width",
    ("summary", "--small-input"): OPTS + "test_summary_small_input_uses_the_3x3_stem",
    ("summary", "--norm"): OPTS + "test_summary_norm_builds_the_model_with_that_normalization",
    ("summary", "--depth"): OPTS + "test_summary_depth_shows_that_many_module_levels",
    ("summary", "--json"): OPTS + "test_summary_json_and_text_show_the_same_totals",

    ("train", "--model"): OPTS + "test_model_builds_the_named_depth",
    ("train", "--norm"): OPTS + "test_norm_puts_the_chosen_normalization_after_every_conv",
    ("train", "--small-input"): OPTS + "test_small_input_picks_the_3x3_stride_1_stem_for_small_images",
    ("train", "--zero-init-residual"): OPTS + "test_zero_init_residual_zeroes_the_last_norm_of_every_residual_branch",
    ("train", "--whiten"): (WHITEN + "test_cli_whiten_trains_with_the_whitened_frozen_first_conv_records_it_and_loads_back",
                            WHITEN + "test_cli_resume_refuses_a_different_whiten_setting"),
    **{("train", flag): tests for flag, tests in TRAINING.items()},

    ("evaluate", "run"): CLI + "test_train_evaluate_predict_end_to_end",
    ("evaluate", "--dataset"): OPTS + "test_evaluate_dataset_data_dir_and_workers_choose_the_test_images",
    ("evaluate", "--data-dir"): OPTS + "test_evaluate_dataset_data_dir_and_workers_choose_the_test_images",
    ("evaluate", "--workers"): OPTS + "test_evaluate_dataset_data_dir_and_workers_choose_the_test_images",
    ("evaluate", "--download"): OPTS + "test_download_fetches_missing_cifar_into_data_dir_for_train_and_evaluate",
    ("evaluate", "--image-size"): OPTS + "test_evaluate_image_size_resizes_the_test_images",
    ("evaluate", "--batch-size"): OPTS + "test_evaluate_batch_size_changes_the_batches_not_the_result",
    ("evaluate", "--best"): (OPTS + "test_evaluate_best_uses_best_safetensors_instead_of_the_last_epoch", ENSEMBLE),
    ("evaluate", "--tta"): (OPTS + "test_evaluate_tta_averages_each_image_with_its_mirror", ENSEMBLE),
    ("evaluate", "--tta-shift"): OPTS + "test_evaluate_tta_shift_adds_each_view_moved_up_down_left_and_right",
    ("evaluate", "--tta-pattern"): OPTS + "test_evaluate_tta_pattern_diamond_moves_the_views_every_way_within_the_shift",
    ("evaluate", "--device"): OPTS + "test_device_cuda_runs_there_or_says_it_is_missing",
    ("evaluate", "--json"): OPTS + "test_evaluate_json_and_text_report_the_same_figures",

    ("predict", "run"): OPTS + "test_predict_top_k_returns_the_k_most_probable_classes",
    ("predict", "images"): (OPTS + "test_predict_top_k_returns_the_k_most_probable_classes",
                            CLI + "test_train_evaluate_predict_end_to_end"),
    ("predict", "--onnx"): OPTS + "test_predict_onnx_gives_the_pytorch_prediction",
    ("predict", "--top-k"): OPTS + "test_predict_top_k_returns_the_k_most_probable_classes",
    ("predict", "--device"): OPTS + "test_device_cuda_runs_there_or_says_it_is_missing",  # xfail: no clear error
    ("predict", "--json"): OPTS + "test_predict_json_and_text_name_the_same_classes",
    ("predict", "--invert"): "tests/deploy/test_predict_qa.py::"
                             "test_invert_predicts_a_dark_on_light_image_as_its_light_on_dark_original",
    ("predict", "--cam"): (CAM + "test_predict_cam_writes_the_top_class_map_over_the_image",
                           CAM + "test_predict_cam_with_several_images_writes_image_cam_png_into_the_directory"),

    ("finetune", "--from"): OPTS + "test_finetune_strategy_all_starts_from_the_source_and_trains_every_layer",
    ("finetune", "--from-file"): OPTS + "test_finetune_from_file_with_model_reads_a_bare_state_dict",
    ("finetune", "--model"): OPTS + "test_finetune_from_file_with_model_reads_a_bare_state_dict",
    ("finetune", "--strategy"): (OPTS + "test_finetune_strategy_last_trains_only_the_last_stage_and_the_classifier",
                                 OPTS + "test_finetune_strategy_all_starts_from_the_source_and_trains_every_layer",
                                 FT + "test_finetune_cli_head_run_records_counts_and_loads_back_through_load_model"),
    ("finetune", "--unfreeze-from"): OPTS + "test_finetune_unfreeze_from_names_the_first_module_that_trains",
    ("finetune", "--backbone-lr-scale"): OPTS + "test_finetune_backbone_lr_scale_sets_the_backbone_rate_to_that_fraction",
    ("finetune", "--freeze-epochs"): FT + "test_finetune_all_with_freeze_epochs_trains_the_head_first_then_everything",
    **{("finetune", flag): FINETUNE_OWN.get(flag, FINETUNE_SAME_AS_TRAIN) for flag in TRAINING
       if flag not in TORCHRUN_ONLY},

    ("experiment", "name"): OPTS + "test_experiment_flags_reach_the_named_experiment",
    ("experiment", "--list"): OPTS + "test_experiment_list_names_every_experiment_with_its_claim",
    ("experiment", "--budget"): (OPTS + "test_experiment_flags_reach_the_named_experiment",
                                 OPTS + "test_experiment_smoke_budget_run_writes_results_and_prints_the_verdict"),
    ("experiment", "--out"): OPTS + "test_experiment_flags_reach_the_named_experiment",
    ("experiment", "--data-dir"): OPTS + "test_experiment_flags_reach_the_named_experiment",
    ("experiment", "--device"): (OPTS + "test_experiment_flags_reach_the_named_experiment",
                                 OPTS + "test_device_cuda_runs_there_or_says_it_is_missing"),
    ("experiment", "--seed"): OPTS + "test_experiment_flags_reach_the_named_experiment",

    ("export", "run"): OPTS + "test_export_fuse_bn_folds_the_batchnorm_arithmetic_and_keeps_the_outputs",
    ("export", "--fuse-bn"): OPTS + "test_export_fuse_bn_folds_the_batchnorm_arithmetic_and_keeps_the_outputs",
    ("export", "--out"): OPTS + "test_export_fuse_bn_folds_the_batchnorm_arithmetic_and_keeps_the_outputs",
    ("export", "--opset"): OPTS + "test_export_opset_sets_the_files_onnx_opset",

    ("report", "run"): (
        REPORT + "test_report_page_has_the_title_one_png_per_figure_and_the_epoch_table_of_metrics_jsonl",
        REPORT + "test_report_of_several_runs_puts_their_curves_on_shared_axes_and_their_numbers_side_by_side"),
    ("report", "--out"): REPORT + "test_report_cli_names_the_file_it_wrote_and_refuses_a_missing_run_in_one_line",
    ("report", "--data-dir"): (REPORT + "test_report_data_dir_is_where_the_test_set_is_read",
                               REPORT + "test_report_without_the_test_set_says_why_and_keeps_the_rest"),
    ("report", "--mistakes"): REPORT + "test_report_mistakes_sets_how_many_wrong_images_the_grid_shows",
    ("report", "--device"): REPORT + "test_report_device_is_where_the_test_set_is_evaluated",

    # lr-find: the model, data and step flags it shares with train reach the library as train's do
    # (train's tests show each one's effect); its own flags are shown by running it.
    **{("lr-find", flag): LRF + "test_lr_find_hands_model_data_and_step_flags_to_the_library_as_train_does"
       for flag in ("--model", "--norm", "--small-input", "--zero-init-residual", "--dataset", "--data-dir",
                    "--download", "--image-size", "--workers", "--batch-size", "--optimizer", "--momentum",
                    "--no-nesterov", "--weight-decay", "--label-smoothing", "--grad-clip", "--no-augment", "--seed",
                    "--device", "--channels-last", "--bf16", "--norm-lr-scale", "--random-erasing", "--flip",
                    "--crop-padding", "--subset", "--sam", "--whiten")},
    ("lr-find", "--fp16"): LRF + "test_lr_find_fp16_on_a_cpu_is_refused_as_train_refuses_it",
    ("lr-find", "--no-progress"): LRF + "test_lr_find_no_progress_hides_the_bar_and_reaches_the_config",
    **{("lr-find", flag): (LRF + "test_cli_lr_find_tests_the_asked_range_writes_the_png_and_prints_the_suggestion",
                           LRF + "test_lr_sequence_is_geometric_from_start_to_end_and_is_what_each_optimizer_step_used")
       for flag in ("--start-lr", "--end-lr", "--steps")},
    ("lr-find", "--out"): (LRF + "test_cli_lr_find_tests_the_asked_range_writes_the_png_and_prints_the_suggestion",
                           LRF + "test_cli_lr_find_without_out_writes_nothing_and_still_suggests"),

    # TrainConfig: the fields behind the flags are shown through the flags' tests; the others
    # through train() directly.
    **{("TrainConfig", field): TRAINING[flag] for field, flag in {
        "epochs": "--epochs", "lr": "--lr", "optimizer": "--optimizer", "momentum": "--momentum",
        "nesterov": "--no-nesterov", "weight_decay": "--weight-decay", "schedule": "--schedule",
        "warmup_epochs": "--warmup-epochs", "label_smoothing": "--label-smoothing", "grad_clip": "--grad-clip",
        "channels_last": "--channels-last", "bf16": "--bf16", "fp16": "--fp16", "compile": "--compile",
        "deterministic": "--deterministic", "seed": "--seed", "device": "--device", "out": "--out",
        "checkpoint_segments": "--checkpoint-segments", "stop_after": "--stop-after",
        "eval_every": "--eval-every"}.items()},
    ("TrainConfig", "resume"): (LOOP + "test_resume_after_interrupt_gives_identical_weights_to_uninterrupted_run",
                                CLI + "test_sigterm_saves_the_position_and_resume_finishes_the_run"),
    ("TrainConfig", "progress"): OPTS + "test_config_progress_off_writes_no_bar",
    ("TrainConfig", "plots"): OPTS + "test_config_plots_draws_curves_and_confusion_only_when_on",
    ("TrainConfig", "lr_scale"): OPTS + "test_config_lr_scale_multiplies_the_rate_of_parameters_by_name_prefix",
    ("TrainConfig", "max_steps_per_epoch"): OPTS + "test_config_max_steps_per_epoch_caps_the_steps_of_each_epoch",
    ("TrainConfig", "tensorboard"): (
        BOARD + "test_tensorboard_scalars_equal_metrics_jsonl_and_hparams_hold_the_recipe_and_final_figures",
        BOARD + "test_tensorboard_histograms_are_the_bn_running_statistics_of_each_epoch",
        BOARD + "test_resume_after_a_kill_past_the_checkpoint_gives_each_epoch_once_in_tensorboard_and_metrics_csv",
        BOARD + "test_without_tensorboard_no_log_is_written_but_metrics_csv_is",
        BOARD + "test_tensorboard_without_out_is_refused_with_the_way_out"),
    **{("TrainConfig", field): TRAINING[flag] for field, flag in {
        "ema": "--ema", "lookahead": "--lookahead", "lookahead_alpha": "--lookahead-alpha",
        "norm_lr_scale": "--norm-lr-scale", "progressive_resize": "--progressive-resize", "mixup": "--mixup",
        "cutmix": "--cutmix", "sam": "--sam"}.items()},

    # DataConfig: the fields behind the data flags (cli._data_config) are shown through the flags'
    # tests; the others through load_data directly, against the same load without the field (or a
    # reference computed by hand). --channels-last sets TrainConfig's field, not DataConfig's.
    **{("DataConfig", field): TRAINING[flag] for field, flag in {
        "name": "--dataset", "subset": "--subset", "seed": "--seed", "image_size": "--image-size",
        "augment": "--no-augment", "flip_mode": "--flip", "crop_padding": "--crop-padding",
        "num_workers": "--workers"}.items()},
    ("DataConfig", "split_seed"): (
        OPTS + "test_every_seed_of_a_folder_tests_on_the_same_held_out_images_and_evaluate_and_finetune_keep_them"),
    ("DataConfig", "data_dir"): (TRAINING["--data-dir"],
                                 BAD_DATA + "test_explicit_data_dir_without_cifar_is_an_error_not_the_env_copy",
                                 BAD_DATA + "test_explicit_data_dir_with_fashion_mnist_still_loads_it_in_every_layout"),
    ("DataConfig", "download"): (TRAINING["--download"],
                                 BAD_DATA + "test_download_with_explicit_data_dir_fills_that_folder"),
    ("DataConfig", "classes"): LOADERS + "test_fake_data_are_deterministic_and_classes_filter_relabels",
    ("DataConfig", "per_class"): (LOADERS + "test_fake_data_are_deterministic_and_classes_filter_relabels",
                                  LOADERS + "test_subset_is_stratified_and_per_class_keeps_k_each"),
    ("DataConfig", "val_fraction"): (
        FOLDERS + "test_val_fraction_holds_out_that_share_of_each_class_as_the_test_split",
        FOLDERS + "test_messy_folder_loads_good_images_and_warns_once_naming_each_bad_file",
        OPTS + "test_val_fraction_holds_out_that_share_and_evaluate_and_finetune_hold_out_the_same"),
    ("DataConfig", "in_channels"): (
        DATA_CONFIG + "test_channels_is_the_channel_count_of_the_batches",
        FOLDERS + "test_folder_grayscale_model_gets_one_channel_and_small_images_keep_their_size"),
    **{("DataConfig", field): (GIVEN_STATS, DATA_CONFIG + "test_a_folder_with_given_mean_and_std_serves_them")
       for field in ("mean", "std")},
    # flip=False: the batches equal a hand-made reference of unmirrored crops; the loader never mirrors.
    ("DataConfig", "flip"): (GIVEN_STATS, LOADERS + "test_flip_disabled_never_mirrors"),
    ("DataConfig", "random_erasing"): (*TRAINING["--random-erasing"],
                                       ERASING + "test_load_data_passes_it_to_the_training_loader_only"),
    ("DataConfig", "batch_size"): (TRAINING["--batch-size"], EVAL_BATCH),
    ("DataConfig", "eval_batch_size"): EVAL_BATCH,
    ("DataConfig", "drop_last"): DATA_CONFIG + "test_drop_last_false_keeps_the_incomplete_training_batch",
    ("DataConfig", "device"): LOADERS + "test_load_data_device_serves_every_batch_there",
    ("DataConfig", "channels_last"): (
        LOADERS + "test_load_data_channels_last_serves_both_splits_in_nhwc_with_the_same_values"),
    **{("DataConfig", field): (
        LOADERS + "test_load_data_rank_and_world_size_serve_each_rank_its_half_of_the_global_batch",
        DIST + "test_torchrun_with_sync_bn_matches_one_process_on_the_global_batch_and_resumes_in_one_process")
       for field in ("rank", "world_size")},
}


def cli_options() -> set[tuple[str, str]]:
    """``(command, option string)`` for every option of every sub-command (positional arguments
    by their name), ``--help`` excluded."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    found = set()
    for command, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for name in action.option_strings or [action.dest]:
                found.add((command, name))
    return found


def config_fields(*configs: type) -> set[tuple[str, str]]:
    """``(class name, field)`` for every field of ``configs`` (default: TrainConfig and DataConfig)."""
    return {(c.__name__, f.name) for c in configs or (TrainConfig, DataConfig) for f in dataclasses.fields(c)}


@cache
def defined_tests(path: str) -> frozenset[str]:
    """Names of the test functions defined at the top level of a test file."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    return frozenset(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def test_every_cli_option_has_a_test_of_its_effect():
    missing = sorted(cli_options() - OPTION_TESTS.keys())
    assert not missing, f"options without a test in OPTION_TESTS: {missing}"


def test_every_train_config_field_has_a_test_of_its_effect():
    missing = sorted(config_fields(TrainConfig) - OPTION_TESTS.keys())
    assert not missing, f"TrainConfig fields without a test in OPTION_TESTS: {missing}"


def test_every_data_config_field_has_a_test_of_its_effect():
    missing = sorted(config_fields(DataConfig) - OPTION_TESTS.keys())
    assert not missing, f"DataConfig fields without a test in OPTION_TESTS: {missing}"


def test_the_map_names_only_existing_options_and_existing_tests():
    stale = sorted(OPTION_TESTS.keys() - cli_options() - config_fields())
    assert not stale, f"OPTION_TESTS entries for options that no longer exist: {stale}"
    absent = []
    for key, tests in OPTION_TESTS.items():
        for node in (tests,) if isinstance(tests, str) else tests:
            path, _, name = node.partition("::")
            if not (ROOT / path).is_file() or name.split("[")[0] not in defined_tests(path):
                absent.append(f"{key}: {node}")
    assert not absent, "mapped tests that do not exist:\n" + "\n".join(absent)
