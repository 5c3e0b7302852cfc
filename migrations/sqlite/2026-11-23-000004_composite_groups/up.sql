-- Composite search parameters: component rows of one element share a group.
ALTER TABLE idx_token ADD COLUMN grp INTEGER;
ALTER TABLE idx_date ADD COLUMN grp INTEGER;
ALTER TABLE idx_reference ADD COLUMN grp INTEGER;
ALTER TABLE idx_string ADD COLUMN grp INTEGER;
ALTER TABLE idx_number ADD COLUMN grp INTEGER;
ALTER TABLE idx_quantity ADD COLUMN grp INTEGER;
ALTER TABLE idx_uri ADD COLUMN grp INTEGER;
