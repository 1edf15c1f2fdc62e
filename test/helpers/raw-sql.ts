import Database from 'better-sqlite3';
import pg from 'pg';

/** Runs SQL straight against the database behind a store URL, bypassing Fleetpass (tamper tests). */
export async function execRaw(url: string, statement: string): Promise<void> {
  if (url.startsWith('sqlite:')) {
    const db = new Database(url.slice('sqlite:'.length));
    try {
      db.pragma('busy_timeout = 5000');
      db.exec(statement);
    } finally {
      db.close();
    }
    return;
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}
