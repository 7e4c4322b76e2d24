-- acorn registry, version 2: the certificate's ARN when AWS IoT Core issued it (the aws
-- signer), needed to revoke and detach it; NULL for certificates of the local CA.
ALTER TABLE devices ADD COLUMN certificate_arn TEXT;
