"""one-api's tables as SQLite DDL, for tests that build a one-api source file (test_import, test_ui_migrate).

Columns from one-api's model/channel.go, model/token.go and model/option.go (shared/reference/oneapi-newapi-schema.md).
"""

ONEAPI_SQLITE_DDL = [
    """CREATE TABLE channels (id integer PRIMARY KEY AUTOINCREMENT, type integer DEFAULT 0, `key` text,
        status integer DEFAULT 1, name text, weight integer DEFAULT 0, created_time integer, test_time integer,
        response_time integer, base_url text DEFAULT '', other text, balance real, balance_updated_time integer,
        models text, `group` text DEFAULT 'default', used_quota integer DEFAULT 0, model_mapping text DEFAULT '',
        priority integer DEFAULT 0, config text, system_prompt text)""",
    """CREATE TABLE tokens (id integer PRIMARY KEY AUTOINCREMENT, user_id integer, `key` text UNIQUE,
        status integer DEFAULT 1, name text, created_time integer, accessed_time integer,
        expired_time integer DEFAULT -1, remain_quota integer DEFAULT 0, unlimited_quota numeric DEFAULT false,
        used_quota integer DEFAULT 0, models text, subnet text DEFAULT '')""",
    "CREATE TABLE options (`key` text PRIMARY KEY, value text)",
]
