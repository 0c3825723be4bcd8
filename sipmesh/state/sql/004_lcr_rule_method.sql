-- sipmesh schema 4: lcr_rule.method, the request methods a rule applies to
-- ("INVITE|MESSAGE"; NULL or '' = any method). Kamailio's lcr_rule has no such
-- column and ignores extra ones, so its tools keep working on the same database.
ALTER TABLE lcr_rule ADD COLUMN method VARCHAR(64) DEFAULT NULL;
