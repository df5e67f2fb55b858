-- Per-account settings (issue 15): the defaults the meetings a person schedules start from, as JSON
-- of edgemeet_shared::schedule::MeetingDefaults (NULL: the usual ones — waiting room on, 60 minutes).
ALTER TABLE users ADD COLUMN meeting_defaults TEXT;
