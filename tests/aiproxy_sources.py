"""labring/aiproxy's tables as PostgreSQL DDL, for tests that build an aiproxy source database (test_import and
the import wizard's UI tests).

Written from the GORM models in labring/aiproxy `core/model/` (channel.go, token.go, group.go, modelconfig.go,
usage.go's embedded Price, option.go) at aebeb5e, with GORM's PostgreSQL types: Go `int` -> bigint, `int32` ->
integer, `float64` -> decimal, `bool` -> boolean, `time.Time` / `gorm.DeletedAt` -> timestamptz, a `size:N` string
-> varchar(N), other strings and the `serializer:fastjson` columns -> text, an `int` primary key -> bigserial.
"""

AIPROXY_POSTGRES_DDL = [
    """CREATE TABLE channels (
        deleted_at timestamptz, created_at timestamptz, last_test_error_at timestamptz,
        balance_updated_at timestamptz, model_mapping text, "key" text, name varchar(64), base_url varchar(128),
        proxy_url varchar(255), models text, balance decimal, id bigserial PRIMARY KEY, used_amount decimal,
        request_count bigint, retry_count bigint, status bigint DEFAULT 1, type bigint DEFAULT 0, priority integer,
        enabled_auto_balance_check boolean, balance_threshold decimal, skip_tls_verify boolean,
        enabled_no_permission_ban boolean, warn_error_rate decimal, max_error_rate decimal, configs text, sets text)""",
    "CREATE INDEX idx_channels_deleted_at ON channels (deleted_at)",
    "CREATE INDEX idx_channels_key ON channels (\"key\")",
    """CREATE TABLE groups (
        created_at timestamptz, id varchar(64) PRIMARY KEY, status bigint DEFAULT 1, rpm_ratio decimal,
        tpm_ratio decimal, used_amount decimal, request_count bigint, available_sets text,
        balance_alert_enabled boolean DEFAULT false, balance_alert_threshold decimal DEFAULT 0)""",
    """CREATE TABLE tokens (
        created_at timestamptz, "key" char(48), name varchar(32) NOT NULL, group_id varchar(64),
        subnets text, models text, status bigint DEFAULT 1, id bigserial PRIMARY KEY, used_amount decimal,
        request_count bigint, quota decimal, period_quota decimal, period_type varchar(20),
        period_last_update_time timestamptz, period_last_update_amount decimal,
        CONSTRAINT fk_groups_tokens FOREIGN KEY (group_id) REFERENCES groups (id))""",
    'CREATE UNIQUE INDEX idx_tokens_key ON tokens ("key")',
    "CREATE UNIQUE INDEX idx_group_name ON tokens (name, group_id)",
    """CREATE TABLE model_configs (
        created_at timestamptz, updated_at timestamptz, config text, plugin text, model varchar(128) PRIMARY KEY,
        owner varchar(32), type bigint, exclude_from_tests boolean, rpm bigint, tpm bigint,
        per_request_price decimal, input_price decimal, input_price_unit bigint, image_input_price decimal,
        image_input_price_unit bigint, audio_input_price decimal, audio_input_price_unit bigint,
        video_input_price decimal, video_input_price_unit bigint, output_price decimal, output_price_unit bigint,
        image_output_price decimal, image_output_price_unit bigint, audio_output_price decimal,
        audio_output_price_unit bigint, thinking_mode_output_price decimal, thinking_mode_output_price_unit bigint,
        cached_price decimal, cached_price_unit bigint, cache_creation_price decimal,
        cache_creation_price_unit bigint, web_search_price decimal, web_search_price_unit bigint,
        conditional_prices text, retry_times bigint, request_timeout bigint, stream_request_timeout bigint,
        force_save_detail boolean, max_image_generation_count bigint, max_video_generation_seconds bigint,
        max_video_generation_count bigint, allowed_resolutions text, request_body_storage_max_size bigint,
        response_body_storage_max_size bigint, summary_service_tier boolean, summary_claude_long_context boolean,
        disable_resolution_fuzzy_match boolean)""",
    'CREATE TABLE options ("key" varchar(64) PRIMARY KEY, value text)',
]

#: GORM's AutoMigrate never drops a column: a database aiproxy created before v0.3 (FastGPT pinned v0.1.7 for a
#: while) still has the token expiry that newer versions removed
AIPROXY_OLD_TOKEN_EXPIRY = "ALTER TABLE tokens ADD COLUMN expired_at timestamptz"
