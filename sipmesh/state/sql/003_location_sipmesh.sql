-- sipmesh schema 3: what a sipmesh binding keeps beyond Kamailio's location columns
-- (Kamailio ignores extra columns): the edge instance and flow that own the contact
-- (DESIGN.md principle 4) and the rest as JSON (transport, service attributes).
ALTER TABLE location ADD COLUMN edge_id VARCHAR(64) DEFAULT NULL;
ALTER TABLE location ADD COLUMN flow_id VARCHAR(128) DEFAULT NULL;
ALTER TABLE location ADD COLUMN attrs TEXT DEFAULT NULL;
