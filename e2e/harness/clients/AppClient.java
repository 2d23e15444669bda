// AppClient: Java's two resolvers, one JSON line per lookup, many lookups per JVM start.
//
//   java -Dsun.net.inetaddr.ttl=0 -Dsun.net.inetaddr.negative.ttl=0 AppClient inet|jndi TYPE NAME ...
//
// inet: InetAddress.getAllByName (getaddrinfo through glibc on Linux), TYPE ADDR only.
// jndi: JNDI DNS (com.sun.jndi.dns.DnsContextFactory) against dns://NAMESERVER/, the first
//   nameserver of /etc/resolv.conf; attributes A, AAAA, SRV, TXT, MX, PTR (NAME is an IP:
//   asked as its in-addr.arpa/ip6.arpa name), CNAME. JNDI applies no search list: NAME is
//   taken as fully qualified. UDP, with TCP when an answer is truncated.
// Lines: {"name","type","ok","addresses"|"records"} or {"ok":false,"code","detail"}.
import java.net.Inet6Address;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Hashtable;
import java.util.List;
import javax.naming.CommunicationException;
import javax.naming.NameNotFoundException;
import javax.naming.NamingEnumeration;
import javax.naming.NamingException;
import javax.naming.OperationNotSupportedException;
import javax.naming.ServiceUnavailableException;
import javax.naming.directory.Attribute;
import javax.naming.directory.Attributes;
import javax.naming.directory.DirContext;
import javax.naming.directory.InitialDirContext;

public class AppClient {
    static final class Failure extends Exception {
        final String code;
        Failure(String code, String detail) { super(detail); this.code = code; }
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    static String list(List<String> items) {
        List<String> quoted = new ArrayList<>();
        for (String item : items) quoted.add(quote(item));
        return "[" + String.join(",", quoted) + "]";
    }

    static String nameserver() throws Exception {
        for (String line : Files.readAllLines(Paths.get("/etc/resolv.conf"))) {
            String[] parts = line.trim().split("\\s+");
            if (parts.length >= 2 && parts[0].equals("nameserver")) return parts[1];
        }
        throw new Exception("no nameserver in /etc/resolv.conf");
    }

    static String reverseName(String ip) throws Exception {
        byte[] raw = InetAddress.getByName(ip).getAddress();  // a literal: no lookup
        StringBuilder b = new StringBuilder();
        if (raw.length == 4) {
            for (int i = 3; i >= 0; i--) b.append(raw[i] & 0xff).append('.');
            return b.append("in-addr.arpa").toString();
        }
        for (int i = raw.length - 1; i >= 0; i--) {
            b.append(Integer.toHexString(raw[i] & 0xf)).append('.');
            b.append(Integer.toHexString((raw[i] >> 4) & 0xf)).append('.');
        }
        return b.append("ip6.arpa").toString();
    }

    static String trim(String name) {
        return name.endsWith(".") ? name.substring(0, name.length() - 1) : name;
    }

    static String jndiValue(String type, String value) {
        switch (type) {
            case "SRV": case "MX": case "PTR": case "CNAME": return trim(value);
            default: return value;
        }
    }

    static List<String> jndi(DirContext ctx, String type, String name) throws Failure {
        String asked = name;
        try {
            if (type.equals("PTR")) asked = reverseName(name);
        } catch (Exception e) {
            throw new Failure("usage", e.toString());
        }
        try {
            Attributes attrs = ctx.getAttributes(asked, new String[] {type});
            Attribute attr = attrs.get(type);
            List<String> out = new ArrayList<>();
            if (attr != null) {
                NamingEnumeration<?> values = attr.getAll();
                while (values.hasMore()) out.add(jndiValue(type, values.next().toString()));
            }
            if (out.isEmpty()) throw new Failure("nodata", "no " + type + " attribute");
            return out;
        } catch (NameNotFoundException e) {
            throw new Failure("nxdomain", e.toString());
        } catch (ServiceUnavailableException e) {
            throw new Failure("servfail", e.toString());
        } catch (OperationNotSupportedException e) {
            throw new Failure("notimp", e.toString());
        } catch (CommunicationException e) {
            throw new Failure("communication", e.toString());
        } catch (NamingException e) {
            throw new Failure("other", e.toString());
        }
    }

    static List<String> inet(String type, String name) throws Failure {
        if (!type.equals("ADDR")) throw new Failure("usage", "inet does ADDR only");
        try {
            List<String> out = new ArrayList<>();
            for (InetAddress a : InetAddress.getAllByName(name)) {
                String text = a.getHostAddress();
                if (a instanceof Inet6Address && text.contains("%")) text = text.split("%")[0];
                out.add(text);
            }
            return out;
        } catch (java.net.UnknownHostException e) {
            throw new Failure("unknownhost", e.toString());
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || (args.length - 1) % 2 != 0
                || !(args[0].equals("inet") || args[0].equals("jndi"))) {
            System.err.println("usage: AppClient inet|jndi TYPE NAME [TYPE NAME...]");
            System.exit(2);
        }
        DirContext ctx = null;
        if (args[0].equals("jndi")) {
            Hashtable<String, String> env = new Hashtable<>();
            env.put("java.naming.factory.initial", "com.sun.jndi.dns.DnsContextFactory");
            env.put("java.naming.provider.url", "dns://" + nameserver() + "/");
            env.put("com.sun.jndi.dns.timeout.initial", "2000");
            env.put("com.sun.jndi.dns.timeout.retries", "2");
            ctx = new InitialDirContext(env);
        }
        StringBuilder out = new StringBuilder();
        for (int i = 1; i < args.length; i += 2) {
            String type = args[i], name = args[i + 1];
            String head = "{\"name\":" + quote(name) + ",\"type\":" + quote(type);
            try {
                List<String> got = ctx != null ? jndi(ctx, type, name) : inet(type, name);
                String field = ctx == null || type.equals("A") || type.equals("AAAA")
                        ? "addresses" : "records";
                out.append(head).append(",\"ok\":true,\"").append(field).append("\":")
                        .append(list(got)).append("}\n");
            } catch (Failure f) {
                out.append(head).append(",\"ok\":false,\"code\":").append(quote(f.code))
                        .append(",\"detail\":").append(quote(f.getMessage())).append("}\n");
            }
        }
        System.out.print(out);
        System.out.flush();
        if (ctx != null) ctx.close();
    }
}
