CREATE TABLE IF NOT EXISTS Wizards (
id SERIAL PRIMARY KEY,
firstname VARCHAR(50),
lastname VARCHAR(50),
email VARCHAR(100)
);
INSERT INTO Wizards (firstname, lastname, email) VALUES
('Harry', 'Potter', 'harry.potter@hogwarts.edu'),
('Ron', 'Weasley', 'ron.weasley@hogwarts.edu'),
('Hermione', 'Granger', 'hermione.granger@hogwarts.edu');
