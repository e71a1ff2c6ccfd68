package dev.kag.neo4j;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.SecureRandom;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.internal.helpers.HostnamePort;
import org.neo4j.kernel.internal.GraphDatabaseAPI;

/**
 * Starts a real Neo4j 5.26 Community database with the Bolt connector on a loopback port and
 * authentication on, prints one line {@code KAG_NEO4J_READY bolt://127.0.0.1:PORT user=neo4j
 * password=PW} when it accepts connections, and shuts down cleanly on SIGTERM/SIGINT (or, with
 * {@code --exit-on-stdin-eof}, when its parent closes stdin).
 *
 * <pre>
 * java -Xmx1g -jar target/kag-neo4j-launcher.jar [--data DIR] [--port 0] [--password PW]
 *      [--pagecache 256m] [--config neo4j.conf] [--exit-on-stdin-eof]
 * </pre>
 *
 * Without {@code --data} the database lives in a temporary directory removed on shutdown.
 */
public final class Launcher {
    private static final String USER = "neo4j";
    private static final String ALPHABET =
            "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

    private Launcher() {}

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Exception e) {
            // without exiting, the database's own threads would keep a half-started JVM alive;
            // the summary comes last, on one line, for whoever reads the tail of the log
            e.printStackTrace();
            System.err.println("kag-neo4j-launcher: start-up failed: " + rootMessage(e));
            System.exit(1);
        }
    }

    private static void run(String[] args) throws Exception {
        Path data = null;
        int port = 0;
        String password = null;
        long pagecache = 256L << 20;
        boolean exitOnStdinEof = false;
        Path config = null;
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--data" -> data = Path.of(value(args, ++i, arg));
                case "--port" -> port = Integer.parseInt(value(args, ++i, arg));
                case "--password" -> password = value(args, ++i, arg);
                case "--pagecache" -> pagecache = parseBytes(value(args, ++i, arg));
                case "--config" -> config = Path.of(value(args, ++i, arg));
                case "--exit-on-stdin-eof" -> exitOnStdinEof = true;
                case "-h", "--help" -> {
                    System.out.println("usage: kag-neo4j-launcher [--data DIR] [--port N] [--password PW]"
                            + " [--pagecache SIZE] [--config neo4j.conf] [--exit-on-stdin-eof]");
                    return;
                }
                default -> fail("unknown argument " + arg);
            }
        }
        if (password == null) {
            password = generatePassword(24);
        } else if (password.length() < 8) {
            fail("--password must have at least 8 characters (Neo4j's minimum)");
        }
        boolean temporary = data == null;
        Path home = temporary ? Files.createTempDirectory("kag-neo4j-") : data.toAbsolutePath();
        Files.createDirectories(home);

        // Neo4j logs through its own files under the home directory; keep stdout for our one line.
        PrintStream out = System.out;
        DatabaseManagementServiceBuilder builder = new DatabaseManagementServiceBuilder(home);
        if (config != null) {
            if (!Files.isRegularFile(config)) {
                fail("--config " + config + " is not a file");
            }
            builder.loadPropertiesFromFile(config); // the options below take precedence
        }
        DatabaseManagementService dbms = builder
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.pagecache_memory, pagecache)
                .build();

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            dbms.shutdown();
            if (temporary) {
                deleteTree(home);
            }
            stopped.countDown();
        }, "kag-neo4j-shutdown"));

        setPassword(dbms, password);
        GraphDatabaseAPI db = (GraphDatabaseAPI) dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
        HostnamePort bound = db.getDependencyResolver()
                .resolveDependency(ConnectorPortRegister.class)
                .getLocalAddress(ConnectorType.BOLT);
        out.println("KAG_NEO4J_READY bolt://127.0.0.1:" + bound.getPort() + " user=" + USER
                + " password=" + password + " home=" + home);
        out.flush();

        if (exitOnStdinEof) {
            InputStream in = System.in;
            byte[] buffer = new byte[256];
            while (in.read(buffer) >= 0) {
                // drain until the parent closes the pipe
            }
            System.exit(0);
        }
        stopped.await();
    }

    private static void setPassword(DatabaseManagementService dbms, String password) {
        try {
            dbms.database("system").executeTransactionally(
                    "ALTER USER " + USER + " SET PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (RuntimeException e) {
            // restarting on a data directory with the password it already has
            if (!String.valueOf(rootMessage(e)).contains("cannot be the same")) {
                throw e;
            }
        }
    }

    private static String rootMessage(Throwable e) {
        StringBuilder sb = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t.getMessage() != null && sb.indexOf(t.getMessage()) < 0) {
                sb.append(sb.length() == 0 ? "" : " | ").append(t.getMessage());
            }
        }
        return sb.length() == 0 ? e.toString() : sb.toString();
    }

    private static String value(String[] args, int i, String flag) {
        if (i >= args.length) {
            fail(flag + " needs a value");
        }
        return args[i];
    }

    private static long parseBytes(String text) {
        String t = text.trim().toLowerCase();
        long unit = 1;
        if (t.endsWith("g")) {
            unit = 1L << 30;
        } else if (t.endsWith("m")) {
            unit = 1L << 20;
        } else if (t.endsWith("k")) {
            unit = 1L << 10;
        }
        if (unit != 1) {
            t = t.substring(0, t.length() - 1);
        }
        return Long.parseLong(t) * unit;
    }

    private static String generatePassword(int length) {
        SecureRandom random = new SecureRandom();
        StringBuilder sb = new StringBuilder(length);
        for (int i = 0; i < length; i++) {
            sb.append(ALPHABET.charAt(random.nextInt(ALPHABET.length())));
        }
        return sb.toString();
    }

    private static void deleteTree(Path root) {
        try {
            Files.walkFileTree(root, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                    Files.deleteIfExists(file);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path dir, IOException exc) throws IOException {
                    Files.deleteIfExists(dir);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (IOException e) {
            System.err.println("kag-neo4j-launcher: could not remove " + root + ": " + e);
        }
    }

    private static void fail(String message) {
        System.err.println("kag-neo4j-launcher: " + message);
        System.exit(2);
    }

    static {
        // Bolt's Netty prints illegal-reflective-access noise otherwise; harmless but confusing.
        System.setProperty("io.netty.tryReflectionSetAccessible", "false");
    }

}
