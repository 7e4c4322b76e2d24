-- acorn registry, version 3: a reservation also holds the device id it registers, so two
-- tokens cannot register one device id at the same time (with the aws signer both would
-- create the same thing, and the loser's undo would delete the winner's).
ALTER TABLE tokens ADD COLUMN reserved_for TEXT;
CREATE INDEX tokens_reserved_for ON tokens (reserved_for) WHERE reserved_for IS NOT NULL;
