-- The seed's messages table: one row per message the bot saw, with a hash of its content and
-- never the content itself (privacy). gen_random_uuid() instead of uuid-ossp's
-- uuid_generate_v4() (built in since PostgreSQL 13). The foreign keys take SHARE ROW
-- EXCLUSIVE on servers and users for the moment the table is created.
CREATE TABLE IF NOT EXISTS messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    user_id text REFERENCES users(discord_id) ON DELETE CASCADE,
    channel_id text NOT NULL,
    message_id text NOT NULL,
    content_hash text,
    sent_at timestamptz NOT NULL,
    is_deleted boolean DEFAULT false,
    deleted_at timestamptz,
    deleted_by text,
    metadata jsonb DEFAULT '{}'::jsonb,
    UNIQUE (server_id, message_id)
);

-- The bot's read path: a user's recent messages in a server.
CREATE INDEX IF NOT EXISTS idx_messages_server_user_sent_at ON messages (server_id, user_id, sent_at);

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Full access for service role" ON messages USING (true) WITH CHECK (true);
