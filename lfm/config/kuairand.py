"""KuaiRand-Pure's release layout as a `sources:` declaration: the default when lfm.yaml declares no sources.

It is data, not code: the same shape a user writes in lfm.yaml for another data set (see the README section
"Your own data"). The four CSV files must list exactly these columns in this order (`exact_columns`), so a
changed release layout is refused by name instead of guessed. `lfm synth` writes exactly this layout.
"""
from __future__ import annotations


def _typed(spec: str) -> dict[str, str]:
    """'name TYPE, name TYPE, ...' -> {name: type}, in order (the release's column lists are long)."""
    out = {}
    for item in spec.split(","):
        name, typ = item.split()
        out[name] = typ.lower()
    return out


_STAT_COLUMNS = (
    "counts show_cnt show_user_num play_cnt play_user_num play_duration complete_play_cnt complete_play_user_num "
    "valid_play_cnt valid_play_user_num long_time_play_cnt long_time_play_user_num short_time_play_cnt "
    "short_time_play_user_num play_progress comment_stay_duration like_cnt like_user_num click_like_cnt "
    "double_click_cnt cancel_like_cnt cancel_like_user_num comment_cnt comment_user_num direct_comment_cnt "
    "reply_comment_cnt delete_comment_cnt delete_comment_user_num comment_like_cnt comment_like_user_num follow_cnt "
    "follow_user_num cancel_follow_cnt cancel_follow_user_num share_cnt share_user_num download_cnt "
    "download_user_num report_cnt report_user_num reduce_similar_cnt reduce_similar_user_num collect_cnt "
    "collect_user_num cancel_collect_cnt cancel_collect_user_num direct_comment_user_num reply_comment_user_num "
    "share_all_cnt share_all_user_num outsite_share_all_cnt"
).split()

KUAIRAND_SOURCES: dict = {
    "events": {
        "path": "log_standard_*.csv",
        "format": "csv",
        "exact_columns": True,
        "time_unit": "ms",  # time_ms: epoch milliseconds
        "date_format": "yyyyMMdd",  # date: 20220425, a calendar day in schema.timezone
        "columns": _typed(
            "user_id INT, video_id INT, date INT, hourmin INT, time_ms BIGINT, is_click INT, is_like INT, "
            "is_follow INT, is_comment INT, is_forward INT, is_hate INT, long_view INT, play_time_ms BIGINT, "
            "duration_ms BIGINT, profile_stay_time BIGINT, comment_stay_time BIGINT, is_profile_enter INT, "
            "is_rand INT, tab INT"),
    },
    "users": {
        "path": "user_features_*.csv",
        "format": "csv",
        "exact_columns": True,
        "columns": _typed(
            "user_id INT, user_active_degree STRING, is_lowactive_period INT, is_live_streamer INT, "
            "is_video_author INT, follow_user_num INT, follow_user_num_range STRING, fans_user_num INT, "
            "fans_user_num_range STRING, friend_user_num INT, friend_user_num_range STRING, register_days INT, "
            "register_days_range STRING, onehot_feat0 INT, onehot_feat1 INT, onehot_feat2 INT, onehot_feat3 INT, "
            "onehot_feat4 DOUBLE, onehot_feat5 INT, onehot_feat6 INT, onehot_feat7 INT, onehot_feat8 INT, "
            "onehot_feat9 INT, onehot_feat10 INT, onehot_feat11 INT, onehot_feat12 DOUBLE, onehot_feat13 DOUBLE, "
            "onehot_feat14 DOUBLE, onehot_feat15 DOUBLE, onehot_feat16 DOUBLE, onehot_feat17 DOUBLE"),
    },
    "items": {
        "path": "video_features_basic_*.csv",
        "format": "csv",
        "exact_columns": True,
        "columns": _typed(
            "video_id INT, author_id BIGINT, video_type STRING, upload_dt DATE, upload_type STRING, "
            "visible_status DOUBLE, video_duration DOUBLE, server_width DOUBLE, server_height DOUBLE, "
            "music_id BIGINT, music_type DOUBLE, tag STRING"),
    },
    "item_statistics": {
        "path": "video_features_statistic_*.csv",
        "format": "csv",
        "exact_columns": True,
        "columns": {"video_id": "int", **{c: "double" for c in _STAT_COLUMNS}},
    },
}
