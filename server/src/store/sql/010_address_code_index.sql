-- Which houses hold a standard address code: no two live houses may, and a push that gives a
-- house a code reads every house holding it first (persons' numbers and plates are found by the
-- summary's columns). Only address-code rows are indexed.
CREATE INDEX field_address_code ON field (value) WHERE field = 'address_code';
