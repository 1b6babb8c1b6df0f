-- transactional: maybe
SELECT 1;
