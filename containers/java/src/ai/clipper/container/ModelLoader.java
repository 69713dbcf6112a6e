package ai.clipper.container;

import java.io.File;
import java.io.IOException;
import java.lang.reflect.Constructor;
import java.lang.reflect.Modifier;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;

/**
 * Finds the model to serve.
 *
 * <ul>
 *   <li>The class: the first argument, else CLIPPER_MODEL_CLASS, else the one concrete class implementing
 *       {@link Model} (with a public no-argument constructor) among the model's compiled classes.</li>
 *   <li>Its classes: the JVM's class path, plus, when CLIPPER_MODEL_PATH names a directory (the model
 *       images set /model), the jars under it and its compiled sources: the classes in
 *       CLIPPER_MODEL_CLASSES when that directory holds any (compiled when the image was built), else
 *       the .java files under CLIPPER_MODEL_PATH compiled now, in-process (javax.tools; the JRE's
 *       jdk.compiler module is enough, no JDK needed).</li>
 * </ul>
 *
 * <p>{@code java ai.clipper.container.ModelLoader --compile SRC DEST} compiles the .java files under SRC
 * (with the jars under SRC on the class path) into DEST: the image's ONBUILD step.
 */
public final class ModelLoader {
    private ModelLoader() {}

    /** The model could not be found, compiled or made. */
    public static final class LoadException extends Exception {
        LoadException(String message) {
            super(message);
        }

        LoadException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    public static void main(String[] args) {
        if (args.length != 3 || !"--compile".equals(args[0])) {
            System.err.println("usage: java ai.clipper.container.ModelLoader --compile SRC_DIR DEST_DIR");
            System.exit(2);
        }
        try {
            int n = compile(Paths.get(args[1]), Paths.get(args[2]));
            System.err.println("compiled " + n + " Java source(s) from " + args[1] + " into " + args[2]);
        } catch (LoadException e) {
            System.err.println("clipper-java-container: error: " + e.getMessage());
            System.exit(1);
        }
    }

    public static Model load(String[] args, Map<String, String> env) throws LoadException {
        String className = args.length > 0 ? args[0] : blankToNull(env.get("CLIPPER_MODEL_CLASS"));
        String modelPath = blankToNull(env.get("CLIPPER_MODEL_PATH"));
        ClassLoader loader = ModelLoader.class.getClassLoader();
        Path classes = null;
        if (modelPath != null && Files.isDirectory(Paths.get(modelPath))) {
            Path dir = Paths.get(modelPath);
            String prebuilt = blankToNull(env.get("CLIPPER_MODEL_CLASSES"));
            if (prebuilt != null && hasFiles(Paths.get(prebuilt), ".class")) {
                classes = Paths.get(prebuilt);
            } else if (hasFiles(dir, ".java")) {
                try {
                    classes = Files.createTempDirectory("clipper-model-classes");
                } catch (IOException e) {
                    throw new LoadException("cannot make a directory for the compiled model: " + e, e);
                }
                int n = compile(dir, classes);
                Log.info("compiled " + n + " Java source(s) from " + dir);
            }
            List<URL> urls = new ArrayList<>();
            try {
                if (classes != null) {
                    urls.add(classes.toUri().toURL());
                }
                for (Path jar : files(dir, ".jar")) {
                    urls.add(jar.toUri().toURL());
                }
            } catch (MalformedURLException e) {
                throw new LoadException("bad model path: " + e, e);
            }
            loader = new URLClassLoader(urls.toArray(new URL[0]), loader);
        }
        if (className == null) {
            className = findModelClass(classes, loader);
        }
        try {
            Class<?> type = Class.forName(className, true, loader);
            if (!Model.class.isAssignableFrom(type)) {
                throw new LoadException(className + " does not implement " + Model.class.getName());
            }
            return (Model) type.getConstructor().newInstance();
        } catch (ClassNotFoundException e) {
            throw new LoadException("model class " + className + " not found", e);
        } catch (NoSuchMethodException e) {
            throw new LoadException(className + " has no public constructor without arguments", e);
        } catch (ReflectiveOperationException | LinkageError e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            throw new LoadException("cannot make a " + className + ": " + cause, cause);
        }
    }

    /** Compiles the .java files under {@code src} into {@code dest}; returns how many. */
    public static int compile(Path src, Path dest) throws LoadException {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        if (javac == null) {
            throw new LoadException("this Java runtime has no compiler (module jdk.compiler): ship compiled classes or a jar instead");
        }
        List<Path> sources = files(src, ".java");
        if (sources.isEmpty()) {
            return 0;
        }
        StringBuilder cp = new StringBuilder(System.getProperty("java.class.path", ""));
        for (Path jar : files(src, ".jar")) {
            cp.append(File.pathSeparator).append(jar);
        }
        List<String> argv = new ArrayList<>(List.of("-d", dest.toString(), "-cp", cp.toString(), "-encoding", "UTF-8",
                "-proc:none", "-nowarn"));
        for (Path s : sources) {
            argv.add(s.toString());
        }
        try {
            Files.createDirectories(dest);
        } catch (IOException e) {
            throw new LoadException("cannot make " + dest + ": " + e, e);
        }
        if (javac.run(null, null, null, argv.toArray(new String[0])) != 0) {
            throw new LoadException("compiling the model's Java sources under " + src + " failed (errors above)");
        }
        return sources.size();
    }

    private static String findModelClass(Path classes, ClassLoader loader) throws LoadException {
        if (classes == null) {
            throw new LoadException("no model class: pass its name, set CLIPPER_MODEL_CLASS, or put its Java sources "
                    + "in CLIPPER_MODEL_PATH");
        }
        List<String> found = new ArrayList<>();
        for (Path f : files(classes, ".class")) {
            String name = classes.relativize(f).toString().replace(File.separatorChar, '.');
            name = name.substring(0, name.length() - ".class".length());
            try {
                Class<?> c = Class.forName(name, false, loader);
                if (Model.class.isAssignableFrom(c) && !c.isInterface() && !Modifier.isAbstract(c.getModifiers())
                        && Modifier.isPublic(c.getModifiers()) && hasNoArgConstructor(c)) {
                    found.add(name);
                }
            } catch (ClassNotFoundException | LinkageError e) {
                // not loadable on its own (e.g. a missing dependency): not the model
            }
        }
        if (found.size() != 1) {
            throw new LoadException((found.isEmpty() ? "no class implementing " + Model.class.getName()
                    : "several model classes " + found) + " among the compiled model classes; set CLIPPER_MODEL_CLASS");
        }
        return found.get(0);
    }

    private static boolean hasNoArgConstructor(Class<?> c) {
        for (Constructor<?> k : c.getConstructors()) {
            if (k.getParameterCount() == 0) {
                return true;
            }
        }
        return false;
    }

    private static List<Path> files(Path dir, String suffix) throws LoadException {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            return walk.filter(p -> Files.isRegularFile(p) && p.getFileName().toString().endsWith(suffix)).sorted()
                    .collect(Collectors.toList());
        } catch (IOException e) {
            throw new LoadException("cannot list " + dir + ": " + e, e);
        }
    }

    private static boolean hasFiles(Path dir, String suffix) throws LoadException {
        return !files(dir, suffix).isEmpty();
    }

    private static String blankToNull(String s) {
        return s == null || s.isBlank() ? null : s;
    }
}
