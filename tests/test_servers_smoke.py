import asyncpg
import redis

async def test_servers_answer(redis_server, postgres_server):
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping() is True
    conn = await asyncpg.connect(postgres_server.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
