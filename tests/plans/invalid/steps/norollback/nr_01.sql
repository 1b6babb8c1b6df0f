CREATE TABLE nr (id int);
