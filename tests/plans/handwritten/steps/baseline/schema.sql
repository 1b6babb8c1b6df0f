-- The Discord moderation bot's database as it stood before the improvements
-- (../shared/baseline.md). Applied once to an empty database by the `local` environment's
-- bootstrap. gen_random_uuid() replaces uuid-ossp's uuid_generate_v4(): built in since PG 13.

CREATE TABLE servers (
    guild_id text PRIMARY KEY,
    restricted_role_id text,
    admin_channel_id text,
    verification_channel_id text,
    admin_notification_role_id text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    settings jsonb DEFAULT '{}'::jsonb,
    is_active boolean DEFAULT true
);

CREATE TABLE users (
    discord_id text PRIMARY KEY,
    username text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    global_reputation_score real,
    account_created_at timestamptz,
    metadata jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE server_members (
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    user_id text REFERENCES users(discord_id) ON DELETE CASCADE,
    join_date timestamptz,
    reputation_score real DEFAULT 0.0,
    is_restricted boolean DEFAULT false,
    last_verified_at timestamptz,
    last_message_at timestamptz,
    message_count integer DEFAULT 0,
    PRIMARY KEY (server_id, user_id)
);

CREATE TABLE detection_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    user_id text REFERENCES users(discord_id) ON DELETE CASCADE,
    detection_type text NOT NULL,
    confidence real NOT NULL,
    detected_at timestamptz DEFAULT now(),
    message_id text,
    channel_id text,
    thread_id text,
    reasons text[],
    metadata jsonb DEFAULT '{}'::jsonb,
    admin_action text,
    admin_action_by text,
    admin_action_at timestamptz,
    latest_verification_event_id uuid
);

CREATE TABLE verification_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    user_id text REFERENCES users(discord_id) ON DELETE CASCADE,
    detection_event_id uuid REFERENCES detection_events(id) ON DELETE SET NULL,
    thread_id text,
    message_id text,
    status text NOT NULL,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    resolved_at timestamptz,
    notes text,
    metadata jsonb DEFAULT '{}'::jsonb
);

ALTER TABLE detection_events
    ADD CONSTRAINT fk_detection_events_verification
    FOREIGN KEY (latest_verification_event_id) REFERENCES verification_events(id) ON DELETE SET NULL;

CREATE TABLE admin_actions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    user_id text REFERENCES users(discord_id) ON DELETE CASCADE,
    admin_id text NOT NULL,
    verification_event_id uuid REFERENCES verification_events(id) ON DELETE CASCADE,
    detection_event_id uuid REFERENCES detection_events(id) ON DELETE SET NULL,
    action_type text NOT NULL,
    action_at timestamptz DEFAULT now(),
    previous_status text,
    new_status text,
    notes text,
    metadata jsonb DEFAULT '{}'::jsonb
);

CREATE INDEX idx_server_members_server_id ON server_members(server_id);
CREATE INDEX idx_server_members_user_id ON server_members(user_id);
CREATE INDEX idx_detection_events_server_id ON detection_events(server_id);
CREATE INDEX idx_detection_events_user_id ON detection_events(user_id);
CREATE INDEX idx_detection_events_detection_type ON detection_events(detection_type);
CREATE INDEX idx_detection_events_detected_at ON detection_events(detected_at);
CREATE INDEX idx_verification_events_server_id ON verification_events(server_id);
CREATE INDEX idx_verification_events_user_id ON verification_events(user_id);
CREATE INDEX idx_verification_events_detection_event_id ON verification_events(detection_event_id);
CREATE INDEX idx_verification_events_status ON verification_events(status);
CREATE INDEX idx_admin_actions_server_id ON admin_actions(server_id);
CREATE INDEX idx_admin_actions_user_id ON admin_actions(user_id);
CREATE INDEX idx_admin_actions_admin_id ON admin_actions(admin_id);
CREATE INDEX idx_admin_actions_verification_event_id ON admin_actions(verification_event_id);
CREATE INDEX idx_admin_actions_detection_event_id ON admin_actions(detection_event_id);

ALTER TABLE servers ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE server_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE detection_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE verification_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE admin_actions ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Full access for service role" ON servers USING (true) WITH CHECK (true);
CREATE POLICY "Full access for service role" ON users USING (true) WITH CHECK (true);
CREATE POLICY "Full access for service role" ON server_members USING (true) WITH CHECK (true);
CREATE POLICY "Full access for service role" ON detection_events USING (true) WITH CHECK (true);
CREATE POLICY "Full access for service role" ON verification_events USING (true) WITH CHECK (true);
CREATE POLICY "Full access for service role" ON admin_actions USING (true) WITH CHECK (true);

-- Counts a user's recent 'message' detections: a label the proposed detection_type enum
-- lacks, so converting the column must fix this function in the same step.
CREATE FUNCTION get_recent_message_count(p_user_id text, p_server_id text, p_timeframe_seconds integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    message_count integer;
BEGIN
    SELECT count(*) INTO message_count
    FROM detection_events
    WHERE user_id = p_user_id
      AND server_id = p_server_id
      AND detection_type = 'message'
      AND detected_at > now() - make_interval(secs => p_timeframe_seconds);
    RETURN message_count;
END;
$$;
